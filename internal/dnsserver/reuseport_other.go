//go:build !linux

package dnsserver

import "syscall"

const reusePortSupported = false

func setReusePort(network, address string, c syscall.RawConn) error { return nil }
