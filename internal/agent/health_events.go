package agent

import (
	"context"
	"time"
)

// A container's own HEALTHCHECK reaches the agent as health_status events,
// in two shapes:
//
//   - Docker sends one when the status changes, naming it
//     ("health_status: unhealthy"), as does Podman 5 (an attribute,
//     health_status=unhealthy), though Podman sends one per check
//     (containers/podman#24003): an event naming the status the agent
//     already holds is nothing to act on.
//   - Podman 4 sends one per check naming no status, and sends it as the
//     check starts, before its result is recorded: inspecting at once
//     reads the previous result. The agent inspects until the container's
//     last check result is newer than the one it holds, a few times over
//     a few seconds (healthRecheckDelays); past that, the periodic resync
//     repairs what it missed.

// healthRecheckDelays are the waits before each new inspection of a
// container whose status-less health_status event had no new result yet:
// about 10 s in all, a check's timeout in most setups.
var healthRecheckDelays = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second, 4 * time.Second}

// healthRecheck is one status-less health_status event being followed up.
type healthRecheck struct {
	id      string
	attempt int
}

// healthEvent acts on a health_status event of a container.
func (a *Agent) healthEvent(ctx context.Context, ev event) {
	if _, ok := a.regs[ev.ID]; !ok {
		return // it registers nothing: its health changes nothing
	}
	if ev.Health != "" {
		if ev.Health != a.dockerHealth[ev.ID].status {
			a.refresh(ctx, ev.ID, "health_status")
		}
		return
	}
	a.recheckHealth(ctx, healthRecheck{id: ev.ID})
}

// recheckHealth inspects a container after a status-less health_status
// event, and registers it anew when its HEALTHCHECK status changed; when
// its last result is not newer than the one the agent holds, it inspects
// again later.
func (a *Agent) recheckHealth(ctx context.Context, r healthRecheck) {
	if _, ok := a.regs[r.id]; !ok {
		return // stopped meanwhile
	}
	c, ok := a.inspect(ctx, r.id, "health_status")
	if !ok {
		return
	}
	held := a.dockerHealth[r.id]
	if c.Running && !c.Paused && c.DockerHealth == held.status {
		if !c.DockerHealthAt.After(held.at) && r.attempt < len(healthRecheckDelays) {
			d := healthRecheckDelays[r.attempt]
			r.attempt++
			time.AfterFunc(d, func() {
				select {
				case a.healthRecheck <- r:
				default: // a burst of them: the periodic resync repairs what is missed
				}
			})
			return
		}
		if c.DockerHealth != "" {
			held.at, held.output = c.DockerHealthAt, c.DockerHealthOutput
			a.dockerHealth[r.id] = held // the next event's result is the one newer than this
		}
		a.log.Debug("health_status event without a change; nothing to write", "container", c.Name, "docker_health", c.DockerHealth, "inspections", r.attempt+1)
		return
	}
	if r.attempt > 0 {
		a.log.Debug("health_status result recorded after the event", "container", c.Name, "docker_health", c.DockerHealth, "inspections", r.attempt+1)
	}
	a.update(ctx, c, "health_status")
}
