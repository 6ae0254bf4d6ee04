//go:build !linux

package etcdtest

import "os/exec"

// dieWithTest does nothing where the kernel cannot tie a child's life to
// its parent's: t.Cleanup stops the members.
func dieWithTest(*exec.Cmd) {}
