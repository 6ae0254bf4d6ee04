package apiclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxWatchEvent bounds one server-sent event of the watch stream: a whole
// service's instance list.
const MaxWatchEvent = 64 << 20

// DefaultWatchStall is Client.WatchStall's default: three of the server's
// 15-second keepalives missed.
const DefaultWatchStall = 45 * time.Second

// errStalled ends a watch whose server went silent.
var errStalled = errors.New("stalled")

// Watch follows the server's watch stream (GET /v1/watch, server-sent
// events) and calls fn with each change: a service's whole current
// instance list, or a reset (WatchEvent.Reset: drop every service not
// named in it) when the server sends the whole state again. service limits the stream to one service (empty: all);
// index starts after that revision (0: a first snapshot of everything).
// It returns when parent ends (parent.Err()), when fn fails (fn's error),
// on a 4xx, or when the stream breaks or the server ends it (an error
// naming the URL) and no other server takes it over; the caller may watch
// again from the last event's Index. A stream on which nothing arrives
// for Client.WatchStall, not even a keepalive (a connection that died
// silently), breaks too.
//
// With several servers, a stream that breaks resumes at once on the
// next server from the last index delivered (the servers share one
// store, and its revisions): Watch returns only once every server has
// failed in a row.
func (c *Client) Watch(parent context.Context, service string, index int64, fn func(WatchEvent) error) error {
	failures := 0
	var errs []error
	for {
		s := c.order()[0]
		established := false
		var fnErr error
		err := c.watchOne(parent, s, service, index, func() { established = true; c.answered(s) }, func(ev WatchEvent) error {
			if ev.Index > index {
				index = ev.Index
			}
			fnErr = fn(ev)
			return fnErr
		})
		switch {
		case fnErr != nil:
			return fnErr
		case parent.Err() != nil:
			return parent.Err()
		case !failsOver(err):
			c.answered(s)
			return err
		}
		c.failed(s, err)
		if established {
			failures, errs = 0, nil
		}
		failures++
		errs = append(errs, err)
		if failures >= len(c.servers) {
			if len(errs) == 1 {
				return errs[0]
			}
			return &allFailed{errs}
		}
	}
}

// watchOne follows one server's stream; connected is called once it
// answers 200.
func (c *Client) watchOne(parent context.Context, s *server, service string, index int64, connected func(), fn func(WatchEvent) error) error {
	stall := c.WatchStall
	if stall <= 0 {
		stall = DefaultWatchStall
	}
	// Until the server answers, another one left to try waits only an
	// attempt's timeout.
	waited := stall
	if len(c.servers) > 1 {
		waited = min(stall, c.attemptTimeout(parent))
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	timer := time.AfterFunc(waited, func() { cancel(errStalled) })
	defer timer.Stop()
	u := *s.base
	u.Path += "/v1/watch"
	q := url.Values{}
	if service != "" {
		q.Set("service", service)
	}
	if index > 0 {
		q.Set("index", strconv.FormatInt(index, 10))
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u.String(), err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	stalled := func() error {
		if parent.Err() == nil && errors.Is(context.Cause(ctx), errStalled) {
			return fmt.Errorf("GET %s: nothing from the server for %s, not even a keepalive", u.String(), waited)
		}
		return nil
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if serr := stalled(); serr != nil {
			return serr
		}
		return fmt.Errorf("GET %s: %w", u.String(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := &Error{Status: resp.StatusCode, Method: http.MethodGet, URL: u.String()}
		if json.Unmarshal(data, &e.ErrorResponse) != nil || e.ErrorResponse.Error == "" {
			e.ErrorResponse.Error = strings.TrimSpace(string(data))
		}
		return e
	}
	connected()
	waited = stall
	timer.Reset(stall)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), MaxWatchEvent)
	var event string
	var data strings.Builder
	for sc.Scan() {
		timer.Reset(stall)
		line := sc.Text()
		switch {
		case line == "":
			if (event == "service" || event == "reset") && data.Len() > 0 {
				var ev WatchEvent
				var err error
				if event == "reset" {
					ev.Reset = &WatchReset{}
					err = json.Unmarshal([]byte(data.String()), ev.Reset)
					ev.Index = ev.Reset.Index
				} else {
					err = json.Unmarshal([]byte(data.String()), &ev)
				}
				if err != nil {
					return fmt.Errorf("GET %s: decode %s event: %w", u.String(), event, err)
				}
				if err := fn(ev); err != nil {
					return err
				}
			}
			event = ""
			data.Reset()
		case strings.HasPrefix(line, ":"): // a comment: keepalive
		case strings.HasPrefix(line, "event:"):
			event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
			if data.Len() > MaxWatchEvent {
				return fmt.Errorf("GET %s: an event is larger than %d bytes", u.String(), MaxWatchEvent)
			}
		}
	}
	if parent.Err() != nil {
		return parent.Err()
	}
	if err := stalled(); err != nil {
		return err
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("GET %s: read stream: %w", u.String(), err)
	}
	return fmt.Errorf("GET %s: the server ended the stream", u.String())
}
