package signposttest

import (
	"bytes"
	"sync"
)

// Output collects what a process or a command writes, for a test to read
// while it runs: safe for concurrent writers and readers, and bounded (the
// first 4 MiB are kept, which is enough to diagnose; the rest is dropped).
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// maxOutput is how much an Output keeps.
const maxOutput = 4 << 20

// Write keeps p while the Output holds less than 4 MiB.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.buf.Len() > maxOutput {
		return len(p), nil
	}
	return o.buf.Write(p)
}

// String returns what was kept.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
