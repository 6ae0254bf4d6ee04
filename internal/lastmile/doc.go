// Package lastmile holds the tests of the last mile: signpost's zone
// served through the resolvers and proxies people already run (Debian's
// dnsmasq, Unbound and HAProxy), each started from the configuration
// files in docs/resolvers/ exactly as documented, with signpost on
// loopback as their only upstream. It has no code of its own.
package lastmile
