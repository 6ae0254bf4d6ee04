//go:build !unix

package httpguard

// RaiseFileLimit does nothing where there is no RLIMIT_NOFILE; it returns
// 0 (unknown).
func RaiseFileLimit() (uint64, error) { return 0, nil }
