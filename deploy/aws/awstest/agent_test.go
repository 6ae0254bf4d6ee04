package awstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/signposttest"
)

// requireDocker skips the test, loudly, when no Docker engine answers, and
// fails it instead when CI=true.
func requireDocker(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.APIVersion}}").CombinedOutput(); err != nil {
		skipOrFail(t, fmt.Sprintf("NO DOCKER ENGINE ANSWERS (docker version: %v: %s): the agent did not run against the stack's zone", err, strings.TrimSpace(string(out))))
	}
}

// command runs name with args (in dir when set) and returns its trimmed
// stdout.
func command(dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, tail(stderr.String(), 20))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func mustCommand(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := command(dir, env, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// containerOf returns the first container definition of a task definition
// of the template.
func containerOf(t *testing.T, tpl *template, id string) map[any]any {
	t.Helper()
	r, ok := tpl.Resources[id]
	if !ok {
		t.Fatalf("the template has no %s", id)
	}
	defs, _ := r.Properties["ContainerDefinitions"].([]any)
	if len(defs) != 1 {
		t.Fatalf("%s: %d container definitions, want 1", id, len(defs))
	}
	m, _ := defs[0].(map[any]any)
	return m
}

// templateCommand returns the agent's command line as the template writes
// it for the Route 53 backend, with the references resolved from refs.
func templateCommand(t *testing.T, tpl *template, refs map[string]string) []string {
	t.Helper()
	cmd, _ := containerOf(t, tpl, "AgentTaskDefinition")["Command"].([]any)
	// !If [IsRoute53, [route53 command], [server command]]
	if len(cmd) != 3 || cmd[0] != "IsRoute53" {
		t.Fatalf("AgentTaskDefinition: Command %v, want !If [IsRoute53, [...], [...]]", cmd)
	}
	args, err := strs(cmd[1])
	if err != nil {
		t.Fatalf("AgentTaskDefinition: Command: %v", err)
	}
	for i, a := range args {
		if v, ok := refs[a]; ok {
			args[i] = v
		}
	}
	return args
}

// registerContainers runs the agent with the template's own command line
// against the stack's zone in moto, with three containers as the template
// defines time, calc and portal.
//
// publicZone says moto made the zone public (see TestRoute53Stack): the
// agent must then refuse it, as it refuses any public zone, and is run
// again with --allow-public-zone.
func registerContainers(t *testing.T, c cli, tpl *template, zoneID string, publicZone bool) {
	requireDocker(t)
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	id := "h-aws-" + hex.EncodeToString(rb[:])
	prefix := "signpost-awstest-" + hex.EncodeToString(rb[:])
	label := "signpost.awstest=" + id

	// The images `make images` builds for `make images-push` (FROM scratch,
	// nothing pulled).
	t.Cleanup(func() {
		if ids, err := command("", nil, "docker", "ps", "-aq", "--filter", "label="+label); err == nil && ids != "" {
			_, _ = command("", nil, "docker", append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
		}
		if ids, err := command("", nil, "docker", "images", "-q", "--filter", "label=signpost.demo="+prefix); err == nil && ids != "" {
			_, _ = command("", nil, "docker", append([]string{"rmi", "-f"}, strings.Fields(ids)...)...)
		}
	})
	mustCommand(t, root, os.Environ(), "make", "images", "IMAGE_PREFIX="+prefix)
	bin := signposttest.Binary(t)

	// Three containers, with the environment and ports of the template's
	// task definitions (secrets replaced by a test password; the portal's
	// DNS server by a closed loopback port: nothing leaves the machine).
	ports := map[string]string{}
	for _, d := range []struct{ def, image, name string }{
		{"TimeTaskDefinition", "time", "_time._tcp"},
		{"CalcTaskDefinition", "calc", "_calc._tcp"},
		{"PortalTaskDefinition", "portal", "portal"},
	} {
		ctr := containerOf(t, tpl, d.def)
		args := []string{"run", "-d", "--name", prefix + "-" + d.image, "--label", label, "--label", "signpost.test=1"}
		pm, _ := ctr["PortMappings"].([]any)
		if len(pm) != 1 {
			t.Fatalf("%s: %d port mappings, want 1", d.def, len(pm))
		}
		cport := fmt.Sprint(pm[0].(map[any]any)["ContainerPort"])
		args = append(args, "-p", "127.0.0.1::"+cport)
		env, _ := ctr["Environment"].([]any)
		for _, e := range env {
			m := e.(map[any]any)
			name, val := fmt.Sprint(m["Name"]), fmt.Sprint(m["Value"])
			switch name {
			case "SIGNPOST_DNS":
				val = "127.0.0.1:9"
			case "SIGNPOST_ZONE":
				val = zoneName
			}
			args = append(args, "-e", name+"="+val)
		}
		secrets, _ := ctr["Secrets"].([]any)
		for _, s := range secrets {
			args = append(args, "-e", fmt.Sprint(s.(map[any]any)["Name"])+"=awstest-password")
		}
		args = append(args, prefix+"/"+d.image+":latest")
		cid := mustCommand(t, "", nil, "docker", args...)
		hp := mustCommand(t, "", nil, "docker", "port", cid, cport+"/tcp")
		_, port, _ := strings.Cut(strings.Fields(hp)[0], ":")
		ports[d.name] = port
		t.Logf("%s: container %.12s, published on 127.0.0.1:%s", d.name, cid, port)
	}

	// The agent, with the template's command line. Only what cannot hold
	// here changes: no instance metadata (--advertise-ip 127.0.0.1 for
	// ec2), the endpoint is moto, the hostname and label are the test's.
	host := id + "." + zoneName
	args := templateCommand(t, tpl, map[string]string{"ZoneName": zoneName, "PrivateHostedZone": zoneID, "AWS::Region": "us-east-1"})
	for i := range args {
		if args[i] == "--advertise-ip" && i+1 < len(args) && args[i+1] == "ec2" {
			args[i+1] = "127.0.0.1"
		}
	}
	args = append(args, "--route53-endpoint", c.endpoint, "--hostname", host, "--only-label", label, "--route53-window", "50ms")
	if publicZone {
		out, err := command("", awsEnv(), bin, args...)
		if err == nil || !strings.Contains(err.Error(), "public zone") {
			t.Fatalf("the agent given a public zone: %v %s; want it to refuse the zone as public", err, out)
		}
		args = append(args, "--allow-public-zone")
	}
	t.Logf("agent: signpost %s", strings.Join(args, " "))
	logs := &signposttest.Output{}
	agent := exec.Command(bin, args...)
	agent.Env = awsEnv()
	agent.Stdout, agent.Stderr = logs, logs
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()
	stopped := false
	stopAgent := func() {
		if stopped {
			return
		}
		stopped = true
		_ = agent.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("agent exit: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = agent.Process.Kill()
			<-exited
			t.Errorf("agent did not stop within 30s of SIGTERM")
		}
	}
	t.Cleanup(func() {
		stopAgent()
		if t.Failed() {
			t.Logf("agent log (end):\n%s", tail(logs.String(), 40))
		}
	})

	label0, _, _ := strings.Cut(host, ".")
	want := map[string]string{
		"_time._tcp." + zoneName + ". SRV": "1 1 " + ports["_time._tcp"] + " " + host,
		"_calc._tcp." + zoneName + ". SRV": "1 1 " + ports["_calc._tcp"] + " " + host,
		"portal." + zoneName + ". SRV":     "1 1 " + ports["portal"] + " " + host,
		label0 + "." + zoneName + ". A":    "127.0.0.1",
	}
	holds := func(want map[string]string) func() (bool, string) {
		return func() (bool, string) {
			sets := listRecords(c, zoneID)
			got := map[string]string{}
			for _, s := range sets {
				if s.Type == "SOA" || s.Type == "NS" {
					continue
				}
				var vals []string
				for _, v := range s.ResourceRecords {
					vals = append(vals, v.Value)
				}
				got[s.Name+" "+s.Type] = strings.Join(vals, ",")
			}
			if len(got) != len(want) {
				return false, "\n" + dump(sets)
			}
			for k, v := range want {
				if got[k] != v {
					return false, "\n" + dump(sets)
				}
			}
			return true, ""
		}
	}
	waitFor(t, "the three containers and the host in the stack's zone", 90*time.Second, holds(want))
	for _, s := range listRecords(c, zoneID) {
		if s.Type == "SRV" && (!strings.HasPrefix(s.SetIdentifier, host+":") || s.Weight == nil || *s.Weight != 1 || s.TTL == nil || *s.TTL != 0) {
			t.Errorf("record set %s: want the original layout (SetIdentifier %s:<container>, weight 1, TTL 0), got weight %v ttl %v", s, host, s.Weight, s.TTL)
		}
	}

	// Stop calc: its record goes.
	mustCommand(t, "", nil, "docker", "stop", "-t", "2", prefix+"-calc")
	delete(want, "_calc._tcp."+zoneName+". SRV")
	waitFor(t, "calc's record gone after its container stopped", 60*time.Second, holds(want))

	// The sweep, with the template's command line (its interval cut to
	// 1s): time's container stops while no agent runs (a dead host), so
	// only the sweep can remove its record: one run of three sweeps
	// removes it in the third (--failures 3); the healthy portal's stays.
	stopAgent()
	mustCommand(t, "", nil, "docker", "stop", "-t", "2", prefix+"-time")
	resolver := hostResolver(t, host)
	sweep := sweepCommand(t, tpl, map[string]string{"ZoneName": zoneName, "PrivateHostedZone": zoneID, "AWS::Region": "us-east-1"})
	sweep = append(sweep, "--route53-endpoint", c.endpoint, "--resolver", resolver, "--timeout", "1s")
	if publicZone {
		sweep = append(sweep, "--allow-public-zone")
	}
	t.Logf("sweep: signpost %s", strings.Join(sweep, " "))
	out, err := command("", awsEnv(), bin, sweep...)
	if err != nil {
		t.Fatalf("sweep run: %v", err)
	}
	t.Logf("sweep run: %s", out)
	var summaries []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "checked ") {
			summaries = append(summaries, line)
		}
	}
	if len(summaries) != 3 || !strings.HasSuffix(summaries[0], " 0 removed") || !strings.HasSuffix(summaries[1], " 0 removed") ||
		!strings.HasSuffix(summaries[2], " 1 removed") || !strings.Contains(out, "removed _time._tcp."+zoneName) {
		t.Fatalf("the sweep's run printed %q: want three sweeps, time's record removed by the third only", summaries)
	}
	delete(want, "_time._tcp."+zoneName+". SRV")
	waitFor(t, "time's record removed by the third sweep, the portal's kept", 10*time.Second, holds(want))

	// A graceful stop leaves the records (no --deregister-on-exit, so that a
	// restarted agent takes them over with no gap); the README's cleanup
	// removes them so that the zone can be deleted.
	waitFor(t, "records kept after the agent's graceful stop", 10*time.Second, holds(want))
	batch := filepath.Join(t.TempDir(), "cleanup.json")
	out = c.run("route53", "list-resource-record-sets", "--hosted-zone-id", zoneID, "--query", cleanupQuery)
	if err := os.WriteFile(batch, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	c.run("route53", "change-resource-record-sets", "--hosted-zone-id", zoneID, "--change-batch", "file://"+batch)
	waitFor(t, "only SOA and NS left after the README's cleanup", 10*time.Second, holds(map[string]string{}))
}

// cleanupQuery is the README's JMESPath that turns the zone's records
// (all but SOA and NS) into a change batch that deletes them.
const cleanupQuery = "{Changes: ResourceRecordSets[?Type != 'SOA' && Type != 'NS'].{Action: 'DELETE', ResourceRecordSet: @}}"

// sweepCommand returns the sweep's command line as the template writes it,
// with the references resolved from refs and its --interval cut to 1s.
func sweepCommand(t *testing.T, tpl *template, refs map[string]string) []string {
	t.Helper()
	args, err := strs(containerOf(t, tpl, "SweepTaskDefinition")["Command"])
	if err != nil {
		t.Fatalf("SweepTaskDefinition: Command: %v", err)
	}
	for i, a := range args {
		if v, ok := refs[a]; ok {
			args[i] = v
		}
		if i > 0 && args[i-1] == "--interval" {
			args[i] = "1s"
		}
	}
	if !slices.Contains(args, "--sweeps") || slices.Contains(args, "--state-file") {
		t.Fatalf("the template's sweep %q: want several sweeps per run (--sweeps) and no state file (each run lands on any instance)", args)
	}
	return args
}

// hostResolver serves DNS on 127.0.0.1 until the test ends, answering
// host's A query with 127.0.0.1 (where the containers publish their ports)
// and every other name with NXDOMAIN, and returns its address: the sweep
// resolves SRV targets with it as it would with the VPC resolver.
func hostResolver(t *testing.T, host string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fqdn := dns.Fqdn(host)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && strings.EqualFold(q.Question[0].Name, fqdn) {
			if q.Question[0].Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0}, A: net.IPv4(127, 0, 0, 1)})
			}
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}
