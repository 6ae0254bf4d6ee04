package fleet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"

	"github.com/signpost-dns/signpost/internal/dockerfake"
)

// Agent is what the nemesis can do to an agent host: a simulated node
// (Node) or the real agent (AgentProc).
type Agent interface {
	NodeName() string
	AgentHost() *Host
	// Freeze stops the agent (no heartbeat, no sync) until Thaw.
	Freeze() error
	Thaw() error
}

func (n *Node) NodeName() string { return n.Name }
func (n *Node) AgentHost() *Host { return n.Host }
func (n *Node) Freeze() error    { n.Pause(); return nil }
func (n *Node) Thaw() error      { n.Resume(); return nil }

// AgentProc is the real `signpost agent` on a host, following a fake
// Docker engine (internal/dockerfake) whose containers the test starts
// and stops: the agent's whole code path, Docker client included, with
// scripted containers. The engine listens on a unix socket, which a
// program in any network namespace reaches.
type AgentProc struct {
	*Proc
	Node   string
	Engine *dockerfake.Server
	ttl    time.Duration
}

func (a *AgentProc) NodeName() string { return a.Node }
func (a *AgentProc) AgentHost() *Host { return a.Host }
func (a *AgentProc) Freeze() error    { return a.Pause() }
func (a *AgentProc) Thaw() error      { return a.Resume() }

// StartAgent starts the real agent on h for node, on every server (the
// first preferred), with its own fake engine.
func StartAgent(t testing.TB, dir, bin string, h *Host, node string, servers []*Server, first int, ttl time.Duration) *AgentProc {
	t.Helper()
	eng, err := dockerfake.New(dockerfake.Config{Socket: filepath.Join(dir, node+".docker.sock")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	var urls []string
	for i := range servers {
		urls = append(urls, servers[(first+i)%len(servers)].URL)
	}
	p := h.Start(t, dir, node, bin, nil, "agent",
		"--docker", eng.Addr(), "--server", strings.Join(urls, ","),
		"--token-file", filepath.Join(dir, "token"),
		"--node", node, "--advertise-ip", h.Addr.String(),
		"--lease-ttl", ttl.String(), "--check", "none",
		"--metrics", h.Addr.String()+":9153")
	return &AgentProc{Proc: p, Node: node, Engine: eng, ttl: ttl}
}

// Run starts size containers of the fleet's services, then about every
// changeEvery stops one and starts another, until ctx ends. Each
// container publishes a port of its own on the host, so each instance
// has a unique address:port.
func (a *AgentProc) Run(ctx context.Context, tr *Traffic, rng *rand.Rand, size int, changeEvery time.Duration, logf func(string, ...any)) {
	var running []string
	start := func() {
		k := tr.seq.Add(1)
		svc := tr.Services[int(k)%len(tr.Services)]
		port := 20000 + k%40000
		id, err := a.Engine.Start(dockerfake.Container{
			Name:     fmt.Sprintf("%s-%s-%d", a.Node, svc, k),
			Env:      []string{"SERVICE_8080_NAME=" + svc},
			Ports:    []string{"8080/tcp"},
			Bindings: network.PortMap{network.MustParsePort("8080/tcp"): {{HostIP: netip.IPv4Unspecified(), HostPort: fmt.Sprint(port)}}},
		})
		if err != nil {
			logf("agent %s: start a container: %v", a.Node, err)
			return
		}
		running = append(running, id)
	}
	for range size {
		start()
	}
	for ctx.Err() == nil {
		sleep(ctx, changeEvery/2+rand.N(changeEvery))
		if ctx.Err() != nil || len(running) == 0 {
			continue
		}
		i := rng.IntN(len(running))
		if err := a.Engine.Stop(running[i]); err != nil {
			logf("agent %s: stop a container: %v", a.Node, err)
		}
		if err := a.Engine.Remove(running[i]); err != nil {
			logf("agent %s: remove a container: %v", a.Node, err)
		}
		running = append(running[:i], running[i+1:]...)
		start()
	}
}
