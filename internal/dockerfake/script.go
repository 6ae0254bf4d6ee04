package dockerfake

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
)

// Start creates and starts a container, emitting create and start, and
// returns its id. A container of the same id that exists and is stopped is
// started again (start only); one that runs is an error.
func (s *Server) Start(c Container) (string, error) {
	if c.ID == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		c.ID = hex.EncodeToString(b)
	}
	if c.Name == "" {
		c.Name = "fake_" + shortID(c.ID)
	}
	if c.Image == "" {
		c.Image = "busybox"
	}
	if c.NetworkMode == "" {
		c.NetworkMode = "bridge"
	}
	for _, p := range c.Ports {
		if _, err := parsePort(p); err != nil {
			return "", fmt.Errorf("dockerfake: container %s: %w", c.Name, err)
		}
	}
	switch c.Health {
	case "", string(container.Starting), string(container.Healthy), string(container.Unhealthy):
	default:
		return "", fmt.Errorf("dockerfake: container %s: health %q: want \"\", starting, healthy or unhealthy", c.Name, c.Health)
	}
	c.Labels = maps.Clone(c.Labels)
	c.Env = slices.Clone(c.Env)
	c.Bindings = maps.Clone(c.Bindings)
	c.Networks = maps.Clone(c.Networks)
	now := time.Now().UTC()

	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.containers[c.ID]
	switch {
	case ok && st.running:
		return "", fmt.Errorf("dockerfake: container %s is already running", shortID(c.ID))
	case !ok:
		for _, o := range s.containers {
			if o.spec.Name == c.Name {
				return "", fmt.Errorf("dockerfake: the container name %q is already in use by %s", c.Name, shortID(o.spec.ID))
			}
		}
		st = &state{spec: c, created: now}
		s.containers[c.ID] = st
		s.order = append(s.order, c.ID)
		s.emitLocked(st, "create", nil)
	}
	st.running, st.status, st.startedAt, st.exitCode = true, container.StateRunning, now, 0
	st.health = nil
	if c.Health != "" {
		st.health = &container.Health{Status: container.HealthStatus(c.Health)}
	}
	s.emitLocked(st, "start", nil)
	return c.ID, nil
}

// Stop stops a running container as docker stop does, emitting kill
// (signal 15), die (exit code 0) and stop.
func (s *Server) Stop(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.runningLocked(id)
	if err != nil {
		return err
	}
	s.stopLocked(st, 0)
	return nil
}

func (s *Server) stopLocked(st *state, exitCode int) {
	if !s.cfg.Podman {
		s.emitLocked(st, "kill", map[string]string{"signal": "15"})
	}
	st.running, st.status, st.finishedAt, st.exitCode = false, container.StateExited, time.Now().UTC(), exitCode
	if st.health != nil {
		st.health.Status = container.Unhealthy
	}
	s.emitLocked(st, "die", map[string]string{"exitCode": strconv.Itoa(exitCode)})
	if !s.cfg.Podman {
		s.emitLocked(st, "stop", nil)
	}
}

// Signal sends a container a signal it handles (a reload: it keeps
// running), emitting kill with the signal, or, as Podman does, with none.
func (s *Server) Signal(id, signal string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.runningLocked(id)
	if err != nil {
		return err
	}
	var attrs map[string]string
	if !s.cfg.Podman {
		attrs = map[string]string{"signal": signal}
	}
	s.emitLocked(st, "kill", attrs)
	return nil
}

// SetHealth sets a running container's HEALTHCHECK status ("starting",
// "healthy" or "unhealthy"), appends a result with output to its health
// log, and emits "health_status: <status>" when the status changes, as the
// engine does.
func (s *Server) SetHealth(id, status, output string) error {
	switch status {
	case string(container.Starting), string(container.Healthy), string(container.Unhealthy):
	default:
		return fmt.Errorf("dockerfake: health %q: want starting, healthy or unhealthy", status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.runningLocked(id)
	if err != nil {
		return err
	}
	if st.health == nil {
		st.health = &container.Health{Status: container.Starting}
	}
	now := time.Now().UTC()
	exit := 0
	if status == string(container.Unhealthy) {
		exit = 1
	}
	res := &container.HealthcheckResult{Start: now.Add(-time.Millisecond), End: now, ExitCode: exit, Output: output}
	if s.cfg.Podman {
		res.End = now.Add(PodmanHealthLag)
		s.podmanHealthLocked(st, res, container.HealthStatus(status))
		return nil
	}
	changed := st.health.Status != container.HealthStatus(status)
	recordHealth(st.health, res, container.HealthStatus(status))
	if changed {
		s.emitLocked(st, events.Action("health_status: "+status), nil)
	}
	return nil
}

// Remove removes a container as docker rm -f does: one that runs is
// stopped first (kill with signal 9, die with exit code 137), then
// destroy is emitted.
func (s *Server) Remove(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.findLocked(id)
	if st == nil {
		return fmt.Errorf("dockerfake: no such container: %s", id)
	}
	if st.running {
		if s.cfg.Podman {
			s.emitLocked(st, "kill", nil)
		} else {
			s.emitLocked(st, "kill", map[string]string{"signal": "9"})
		}
		st.running, st.status, st.finishedAt, st.exitCode = false, container.StateExited, time.Now().UTC(), 137
		s.emitLocked(st, "die", map[string]string{"exitCode": "137"})
	}
	if s.cfg.Podman {
		s.emitLocked(st, "remove", nil)
	} else {
		s.emitLocked(st, "destroy", nil)
	}
	delete(s.containers, st.spec.ID)
	s.order = slices.DeleteFunc(s.order, func(o string) bool { return o == st.spec.ID })
	return nil
}

// runningLocked finds a running container (as findLocked).
func (s *Server) runningLocked(id string) (*state, error) {
	st := s.findLocked(id)
	if st == nil {
		return nil, fmt.Errorf("dockerfake: no such container: %s", id)
	}
	if !st.running {
		return nil, fmt.Errorf("dockerfake: container %s is not running", shortID(st.spec.ID))
	}
	return st, nil
}

// findLocked finds a container by id, unique id prefix or name.
func (s *Server) findLocked(ref string) *state {
	if st, ok := s.containers[ref]; ok {
		return st
	}
	var found *state
	for _, st := range s.containers {
		if st.spec.Name == ref || "/"+st.spec.Name == ref {
			return st
		}
		if len(ref) >= 1 && len(ref) < len(st.spec.ID) && st.spec.ID[:len(ref)] == ref {
			if found != nil {
				return nil // ambiguous
			}
			found = st
		}
	}
	return found
}

// emitLocked records one container event and wakes the streams.
func (s *Server) emitLocked(st *state, action events.Action, extra map[string]string) {
	attrs := maps.Clone(st.spec.Labels)
	if attrs == nil {
		attrs = map[string]string{}
	}
	attrs["image"] = st.spec.Image
	attrs["name"] = st.spec.Name
	maps.Copy(attrs, extra)
	now := time.Now().UnixNano()
	if now <= s.lastTime {
		now = s.lastTime + 1 // strictly increasing, so that since/until are exact
	}
	s.lastTime = now
	m := events.Message{
		Type:     events.ContainerEventType,
		Action:   action,
		Actor:    events.Actor{ID: st.spec.ID, Attributes: attrs},
		Scope:    "local",
		Time:     now / int64(time.Second),
		TimeNano: now,
	}
	s.held = append(s.held, m)
	if over := len(s.held) - s.cfg.MaxEvents; over > 0 {
		s.held = slices.Clone(s.held[over:])
		s.firstSeq += uint64(over)
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
