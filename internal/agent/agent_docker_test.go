package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signpost-dns/signpost/internal/agent/internal/dockertest"
)

// get fetches an HTTP answer from a registered instance (on loopback).
func get(t *testing.T, port uint16) string {
	t.Helper()
	return getPath(t, port, "/")
}

// getPath GETs path on 127.0.0.1:port (a test server's /fail or
// /recover, say) and returns the body.
func getPath(t *testing.T, port uint16, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s of the registered instance at 127.0.0.1:%d: %v", path, port, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestDynamicHostPort(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.addAgent(s.agentConfig("host-a"))
	id := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=calc", "-e", "CALC_PASSWORD=hunter2")
	hp := hostPort(t, id, "8081/tcp")
	recs := s.waitSRV("calc", hp)
	if recs[0].Addr != "127.0.0.1" {
		t.Errorf("SRV target %s has address %q, want the advertised 127.0.0.1", recs[0].Target, recs[0].Addr)
	}
	if !strings.HasPrefix(recs[0].Target, id[:12]+"-8081-tcp-") {
		t.Errorf("SRV target %s: want the instance id <short container id>-8081-tcp-<node hash>", recs[0].Target)
	}
	s.waitSRV("_calc._tcp", hp)
	if got := get(t, recs[0].Port); !strings.HasPrefix(got, "ok ") {
		t.Errorf("the instance DNS names answers %q", got)
	}
	list, _, err := s.client.Instances(context.Background(), "host-a")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		if len(in.Meta) != 0 {
			t.Errorf("instance %s publishes metadata %v; only SERVICE_* variables may be read (CALC_PASSWORD is not)", in.ID, in.Meta)
		}
	}
}

func TestPortsUDPServiceNameLabels(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.addAgent(s.agentConfig("host-a"))
	multi := s.sess.Run("-p", "8081", "-p", "8082", "-p", "5353/udp", "-e", "PORTS=8081,8082,5353/udp",
		"-e", "SERVICE_8081_NAME=api", "-e", "SERVICE_8082_NAME=_admin._tcp", "-e", "SERVICE_5353_NAME=_echo._udp",
		"-e", "SERVICE_8081_TAGS=v1,blue", "-e", "SERVICE_8081_WEIGHT=7", "-e", "SERVICE_VERSION=1.2")
	named := s.sess.Run("-p", "8081", "-p", "8082", "-e", "PORTS=8081,8082", "-e", "SERVICE_NAME=shop")
	solo := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_NAME=solo")
	labelled := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=fromenv", "--label", "SERVICE_8081_NAME=fromlabel")

	for _, c := range []struct{ service, id, port string }{
		{"api", multi, "8081/tcp"}, {"admin", multi, "8082/tcp"}, {"_echo._udp", multi, "5353/udp"},
		{"shop-8081", named, "8081/tcp"}, {"shop-8082", named, "8082/tcp"},
		{"solo", solo, "8081/tcp"}, {"fromlabel", labelled, "8081/tcp"},
	} {
		s.waitSRV(c.service, hostPort(t, c.id, c.port))
	}
	s.waitSRV("fromenv")

	svc, err := s.client.Service(context.Background(), "api", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Instances) != 1 {
		t.Fatalf("api: %+v", svc.Instances)
	}
	in := svc.Instances[0]
	if in.Weight != 7 || strings.Join(in.Tags, ",") != "v1,blue" || in.Meta["version"] != "1.2" || len(in.Meta) != 1 {
		t.Errorf("api instance: weight %d tags %v meta %v; want 7, [v1 blue], version=1.2", in.Weight, in.Tags, in.Meta)
	}
	// The udp instance really answers on the published port.
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", hostPort(t, multi, "5353/udp")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("ping"))
	buf := make([]byte, 16)
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "ping" {
		t.Errorf("udp echo via the registered port: %q, %v", buf[:n], err)
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.addAgent(s.agentConfig("host-a"))
	id := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=life")
	s.waitSRV("life", hostPort(t, id, "8081/tcp"))

	steps := []struct {
		docker  []string
		present bool
	}{
		{[]string{"restart", "-t", "1"}, true},
		{[]string{"pause"}, false},
		{[]string{"unpause"}, true},
		{[]string{"stop", "-t", "5"}, false},
		{[]string{"start"}, true},
		{[]string{"kill"}, false},
		{[]string{"start"}, true},
		{[]string{"rm", "-f"}, false},
	}
	for i, st := range steps {
		dockertest.Docker(t, append(st.docker, id)...)
		if st.present {
			s.waitSRV("life", hostPort(t, id, "8081/tcp"))
		} else {
			s.waitSRV("life")
		}
		if i == 4 {
			// A reload signal leaves the container registered: once a
			// container started after it is registered (events are handled
			// in order), the first is still there.
			dockertest.Docker(t, "kill", "-s", "HUP", id)
			marker := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=marker")
			s.waitSRV("marker", hostPort(t, marker, "8081/tcp"))
			s.waitSRV("life", hostPort(t, id, "8081/tcp"))
		}
	}
	list, _, err := s.client.Instances(context.Background(), "host-a")
	if err != nil || len(list) != 1 || list[0].Service != "marker" {
		t.Errorf("after docker rm -f the node has %v (%v), want the marker alone", list, err)
	}
}

func TestTwentyAtOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.addAgent(s.agentConfig("host-a"))
	dockertest.Image(t)
	ids := make([]string, 20)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=swarm")
		}()
	}
	wg.Wait()
	var ports []uint16
	for _, id := range ids {
		ports = append(ports, hostPort(t, id, "8081/tcp"))
	}
	s.waitSRV("swarm", ports...)
	dockertest.Docker(t, append([]string{"rm", "-f"}, ids...)...)
	s.waitSRV("swarm")
}

func TestBadConventions(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.addAgent(s.agentConfig("host-a"))
	id := s.sess.Run("--name", "bad-"+s.sess.ID, "-p", "8081", "-p", "8082", "-p", "8083", "-p", "8084", "-e", "PORTS=8081,8082,8083,8084",
		"-e", "SERVICE_8081_NAME=Calc Service!", "-e", "SERVICE_80x_NAME=typo", "-e", "SERVICE_9999_NAME=ghost",
		"-e", "SERVICE_8082_NAME=heavy", "-e", "SERVICE_8082_WEIGHT=abc",
		"-e", "SERVICE_8083_NAME=good", "-e", "SERVICE_8084_NAME=hidden", "--expose", "8085", "-e", "SERVICE_8085_NAME=unpublished")
	s.waitSRV("good", hostPort(t, id, "8083/tcp"))
	s.waitSRV("hidden", hostPort(t, id, "8084/tcp"))
	name := "container=bad-" + s.sess.ID
	s.waitLog("bad service convention", name, "SERVICE_8081_NAME")
	s.waitLog("bad service convention", name, "SERVICE_80x_NAME")
	s.waitLog("bad service convention", name, "SERVICE_9999_NAME")
	s.waitLog("bad service convention", name, "SERVICE_8082_WEIGHT")
	s.waitLog("port not published", name, "port=8085/tcp")
	for _, svc := range []string{"heavy", "ghost", "typo", "unpublished"} {
		if recs, _, _ := lookup(s.srv.DNSAddr(), svc); len(recs) != 0 {
			t.Errorf("%s registered despite bad conventions: %v", svc, recs)
		}
	}
	if n := strings.Count(s.log.String(), "SERVICE_8081_NAME"); n != 1 {
		t.Errorf("the warning about SERVICE_8081_NAME was logged %d times, want once", n)
	}
	// The agent carries on.
	ok := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=after")
	s.waitSRV("after", hostPort(t, ok, "8081/tcp"))
}

func TestAddressModes(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.addAgent(s.agentConfig("host-a"))
	net := "signpost-test-" + s.sess.ID
	s.sess.Network(net)
	id := s.sess.Run("--network", net, "--label", "signpost.address-mode=container", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=inner", "--expose", "8081")
	ip := dockertest.Docker(t, "inspect", "--format", "{{(index .NetworkSettings.Networks \""+net+"\").IPAddress}}", id)
	recs := s.waitSRV("inner", 8081)
	if recs[0].Addr != ip {
		t.Errorf("container mode registered %s, want the container's address %s on %s", recs[0].Addr, ip, net)
	}
	hp := freePort(t)
	s.sess.Run("--network", "host", "--expose", fmt.Sprint(hp), "-e", fmt.Sprintf("PORTS=%d", hp), "-e", fmt.Sprintf("SERVICE_%d_NAME=hostnet", hp))
	recs = s.waitSRV("hostnet", hp)
	if recs[0].Addr != "127.0.0.1" {
		t.Errorf("host-network container registered %s, want the host address 127.0.0.1", recs[0].Addr)
	}
	if got := get(t, hp); !strings.HasPrefix(got, "ok ") {
		t.Errorf("host-network instance answers %q", got)
	}
}

func TestAgentBeforeDockerAndDockerGoingAway(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	sock := filepath.Join(t.TempDir(), "docker.sock")
	cfg := s.agentConfig("host-a")
	cfg.Docker = "unix://" + sock
	s.addAgent(cfg)
	s.waitLog("waiting for Docker to answer", sock)
	// Docker "comes up": the socket appears, proxied to the real engine.
	p := startProxy(t, sock, "/var/run/docker.sock")
	id := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=late")
	s.waitSRV("late", hostPort(t, id, "8081/tcp"))
	s.waitLog("connected to Docker", sock)

	// Docker "goes away" (every connection cut, as a restart does); what
	// changes meanwhile is found by the resync after the reconnect.
	p.close()
	s.waitLog("lost Docker; reconnecting")
	dockertest.Docker(t, "rm", "-f", id)
	other := s.sess.Run("-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=late")
	startProxy(t, sock, "/var/run/docker.sock")
	s.waitSRV("late", hostPort(t, other, "8081/tcp"))
}

// unixProxy forwards connections on a unix socket to another, and can cut
// them all at once.
type unixProxy struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, path, target string) *unixProxy {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &unixProxy{l: l}
	t.Cleanup(p.close)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, d)
			p.mu.Unlock()
			go func() { io.Copy(d, c); d.Close() }()
			go func() { io.Copy(c, d); c.Close() }()
		}
	}()
	return p
}

func (p *unixProxy) close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestTwoAgentsMerged(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	a := s.agentConfig("host-a")
	a.Labels["group"] = "a"
	b := s.agentConfig("host-b")
	b.Labels["group"] = "b"
	s.addAgent(a)
	s.addAgent(b)
	ia := s.sess.Run("--label", "group=a", "-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=shared")
	ib := s.sess.Run("--label", "group=b", "-p", "8081", "-e", "PORTS=8081", "-e", "SERVICE_8081_NAME=shared")
	s.waitSRV("shared", hostPort(t, ia, "8081/tcp"), hostPort(t, ib, "8081/tcp"))
	svc, err := s.client.Service(context.Background(), "shared", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]bool{}
	for _, in := range svc.Instances {
		nodes[in.Node] = true
	}
	if !nodes["host-a"] || !nodes["host-b"] || len(nodes) != 2 {
		t.Errorf("shared's instances come from nodes %v, want host-a and host-b", nodes)
	}
	// One host's container going leaves the other's.
	dockertest.Docker(t, "rm", "-f", ia)
	s.waitSRV("shared", hostPort(t, ib, "8081/tcp"))
}
