package httpguard

import (
	"net/http"
	"time"
)

// chunk is how much of a response one write deadline covers: a client
// that reads slowly but steadily is served, one that stops reading is cut
// after WriteTimeout.
const chunk = 64 << 10

// deadlineWriter gives every write, and every chunk of a large write, a
// fresh write deadline. Handlers behind it write shared, already encoded
// bytes; a client that stops reading holds them for WriteTimeout at most.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineWriter) extend() {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
}

func (d *deadlineWriter) WriteHeader(code int) {
	d.extend()
	d.ResponseWriter.WriteHeader(code)
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), chunk)
		d.extend()
		m, err := d.ResponseWriter.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Flush sends what is buffered, within a fresh deadline.
func (d *deadlineWriter) Flush() {
	d.extend()
	_ = d.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }
