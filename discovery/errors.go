package discovery

import "errors"

var (
	// ErrNotFound is wrapped by lookup errors when the service has no
	// instances: the name does not exist (NXDOMAIN), has no SRV records
	// (NODATA), or none of its targets has an address.
	ErrNotFound = errors.New("no instances found")
	// ErrUnreachable is wrapped by lookup errors when the DNS server did not
	// answer (refused, timed out, or the network failed).
	ErrUnreachable = errors.New("DNS server unreachable")
	// ErrUnavailable is wrapped by dial errors when instances were found but
	// none of them accepted a connection.
	ErrUnavailable = errors.New("no instance accepted a connection")
)
