package awstest

// Each variant of deploy/aws/signpost.yaml (and ecr.yaml) deployed into
// moto_server on 127.0.0.1: the stack reaches CREATE_COMPLETE, every
// resource the variant should create is there (except the types moto does
// not emulate, named in motoSkips), the outputs are there, and the
// resources are wired as the README says. In the Route 53 variant the real
// `signpost agent`, started with the template's own command line, registers
// three real containers into the zone the stack created.
//
// moto is an emulator, not AWS: what it does not model is not validated
// here (see deploy/aws/README.md, "What was validated").

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// motoSkips are the resource types moto 5.2's CloudFormation does not
// emulate: it logs "No Moto CloudFormation support for <type>", creates
// nothing and still reports CREATE_COMPLETE.
var motoSkips = map[string]bool{
	"AWS::SecretsManager::Secret":                   true,
	"AWS::Route53Resolver::ResolverEndpoint":        true,
	"AWS::Route53Resolver::ResolverRule":            true,
	"AWS::Route53Resolver::ResolverRuleAssociation": true,
}

// params are a variant's stack parameters.
func (v variant) params() map[string]string {
	p := map[string]string{
		"Backend":           v.Backend,
		"ImageRegistry":     "123456789012.dkr.ecr.us-east-1.amazonaws.com/signpost",
		"PortalAllowedCidr": "203.0.113.7/32",
	}
	if v.Store != "" {
		p["ServerStore"] = v.Store
	}
	if v.Store == "etcd" {
		p["EtcdEndpoints"] = "http://10.0.0.9:2379"
	}
	return p
}

type stackResource struct {
	LogicalResourceId  string
	ResourceType       string
	PhysicalResourceId string
	ResourceStatus     string
}

type stack struct {
	c    cli
	name string
	// Resources by logical id (moto also lists the resources of false
	// conditions, with no id: those are left out).
	Resources map[string]stackResource
	Outputs   map[string]string
	Status    string
}

// createStack creates a stack from path with params and waits for it.
func createStack(c cli, name, path string, params map[string]string) *stack {
	c.t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		c.t.Fatal(err)
	}
	args := []string{"cloudformation", "create-stack", "--stack-name", name,
		"--template-body", "file://" + abs, "--capabilities", "CAPABILITY_IAM"}
	if len(params) > 0 {
		args = append(args, "--parameters")
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range params {
				if !yield(k) {
					return
				}
			}
		}) {
			args = append(args, fmt.Sprintf("ParameterKey=%s,ParameterValue=%s", k, params[k]))
		}
	}
	c.run(args...)
	c.run("cloudformation", "wait", "stack-create-complete", "--stack-name", name)
	return describeStack(c, name)
}

func describeStack(c cli, name string) *stack {
	c.t.Helper()
	var d struct {
		Stacks []struct {
			StackStatus string
			Outputs     []struct{ OutputKey, OutputValue string }
		}
	}
	c.json(&d, "cloudformation", "describe-stacks", "--stack-name", name)
	if len(d.Stacks) != 1 {
		c.t.Fatalf("describe-stacks %s: %d stacks", name, len(d.Stacks))
	}
	s := &stack{c: c, name: name, Status: d.Stacks[0].StackStatus, Outputs: map[string]string{}, Resources: map[string]stackResource{}}
	for _, o := range d.Stacks[0].Outputs {
		s.Outputs[o.OutputKey] = o.OutputValue
	}
	var r struct{ StackResources []stackResource }
	c.json(&r, "cloudformation", "describe-stack-resources", "--stack-name", name)
	for _, x := range r.StackResources {
		if x.LogicalResourceId != "" {
			s.Resources[x.LogicalResourceId] = x
		}
	}
	return s
}

// physical returns a resource's physical id, failing when it is absent.
func (s *stack) physical(id string) string {
	s.c.t.Helper()
	r, ok := s.Resources[id]
	if !ok || r.PhysicalResourceId == "" {
		s.c.t.Fatalf("stack %s has no resource %s", s.name, id)
	}
	return r.PhysicalResourceId
}

// checkCreated compares the stack with what the template says variant v
// creates.
func checkCreated(t *testing.T, s *stack, tpl *template, v variant) {
	t.Helper()
	if s.Status != "CREATE_COMPLETE" {
		t.Fatalf("stack %s: status %s, want CREATE_COMPLETE", s.name, s.Status)
	}
	want, outputs := tpl.expected(t, v)
	var skipped []string
	for id, typ := range want {
		got, ok := s.Resources[id]
		switch {
		case !ok && motoSkips[typ]:
			skipped = append(skipped, id+" ("+typ+")")
		case !ok:
			t.Errorf("stack %s: resource %s (%s) missing", s.name, id, typ)
		case got.ResourceType != typ:
			t.Errorf("stack %s: resource %s is a %s, want %s", s.name, id, got.ResourceType, typ)
		case got.ResourceStatus != "CREATE_COMPLETE":
			t.Errorf("stack %s: resource %s is %s", s.name, id, got.ResourceStatus)
		}
	}
	for id := range s.Resources {
		if _, ok := want[id]; !ok {
			t.Errorf("stack %s: resource %s, which variant %s should not create", s.name, id, v.Name)
		}
	}
	sort.Strings(skipped)
	t.Logf("stack %s: %d resources created; not emulated by moto, so not created: %s", s.name, len(want)-len(skipped), strings.Join(skipped, ", "))
	var gotOut []string
	for k := range s.Outputs {
		gotOut = append(gotOut, k)
	}
	sort.Strings(gotOut)
	if !slices.Equal(gotOut, outputs) {
		t.Errorf("stack %s: outputs %v, want %v", s.name, gotOut, outputs)
	}
}

// taskDef returns a task definition's first container.
func taskDef(c cli, arn string) (networkMode string, ctr containerDef) {
	c.t.Helper()
	var d struct {
		TaskDefinition struct {
			NetworkMode          string
			ContainerDefinitions []containerDef
		}
	}
	c.json(&d, "ecs", "describe-task-definition", "--task-definition", arn)
	if len(d.TaskDefinition.ContainerDefinitions) != 1 {
		c.t.Fatalf("task definition %s: %d containers, want 1", arn, len(d.TaskDefinition.ContainerDefinitions))
	}
	return d.TaskDefinition.NetworkMode, d.TaskDefinition.ContainerDefinitions[0]
}

type containerDef struct {
	Name         string
	Image        string
	Command      []string
	Environment  []struct{ Name, Value string }
	PortMappings []struct{ ContainerPort, HostPort int }
	MountPoints  []struct{ SourceVolume, ContainerPath string }
}

func (d containerDef) env(name string) string {
	for _, e := range d.Environment {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// wantArgs checks that cmd holds each flag followed by its value.
func wantArgs(t *testing.T, what string, cmd []string, pairs ...string) {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		j := slices.Index(cmd, pairs[i])
		if j < 0 || j+1 >= len(cmd) || cmd[j+1] != pairs[i+1] {
			t.Errorf("%s: command %q lacks %s %s", what, cmd, pairs[i], pairs[i+1])
		}
	}
}

// deleteStack deletes the stack and checks what went. moto 5.2 cannot
// delete every type it creates (see the README): those are logged, the
// rest must be gone.
func deleteStack(t *testing.T, s *stack) {
	t.Helper()
	c := s.c
	_, err := c.try("cloudformation", "delete-stack", "--stack-name", s.name)
	if err != nil {
		// moto deletes no AWS::EC2::RouteTable, so the VPC keeps a
		// second route table and its deletion is refused.
		if !strings.Contains(err.Error(), "DependencyViolation") || !strings.Contains(err.Error(), "vpc") {
			t.Fatalf("delete stack %s: %v", s.name, err)
		}
		t.Logf("delete stack %s: moto answered %v (moto does not delete route tables: a known gap of the emulator, not of the template)", s.name, err)
	}
	if out, err := c.try("cloudformation", "describe-stacks", "--stack-name", s.name); err == nil && !strings.Contains(out, "DELETE_COMPLETE") {
		t.Errorf("stack %s still there after delete-stack: %s", s.name, tail(out, 10))
	}
	listed := map[string]string{} // one listing per type
	list := func(args ...string) string {
		k := strings.Join(args, " ")
		if _, ok := listed[k]; !ok {
			listed[k] = c.run(args...)
		}
		return listed[k]
	}
	for id, r := range s.Resources {
		var gone bool
		var out string
		switch r.ResourceType {
		case "AWS::IAM::Role":
			gone = !strings.Contains(list("iam", "list-roles", "--query", "Roles[].RoleName"), `"`+r.PhysicalResourceId+`"`)
		case "AWS::AutoScaling::AutoScalingGroup":
			out = c.run("autoscaling", "describe-auto-scaling-groups", "--auto-scaling-group-names", r.PhysicalResourceId)
			gone = !strings.Contains(out, r.PhysicalResourceId)
		case "AWS::Events::Rule":
			_, err := c.try("events", "describe-rule", "--name", r.PhysicalResourceId)
			gone = err != nil
		case "AWS::Logs::LogGroup":
			out = c.run("logs", "describe-log-groups", "--log-group-name-prefix", r.PhysicalResourceId)
			gone = !strings.Contains(out, `"`+r.PhysicalResourceId+`"`)
		case "AWS::ElasticLoadBalancingV2::LoadBalancer":
			out, err = c.try("elbv2", "describe-load-balancers", "--load-balancer-arns", r.PhysicalResourceId)
			gone = err != nil
		case "AWS::EC2::Instance":
			out = c.run("ec2", "describe-instances", "--instance-ids", r.PhysicalResourceId, "--query", "Reservations[].Instances[].State.Name")
			gone = strings.Contains(out, "terminated")
		case "AWS::EC2::Subnet", "AWS::EC2::SecurityGroup", "AWS::EC2::LaunchTemplate":
			gone = !strings.Contains(list("ec2", describeEC2[r.ResourceType]), r.PhysicalResourceId)
		default:
			continue
		}
		if !gone {
			t.Errorf("stack %s deleted, but its %s %s (%s) is still there: %s", s.name, r.ResourceType, id, r.PhysicalResourceId, tail(out, 5))
		}
	}
	if id, ok := s.Resources["PrivateHostedZone"]; ok {
		if _, err := c.try("route53", "get-hosted-zone", "--id", id.PhysicalResourceId); err == nil {
			t.Logf("stack %s deleted; moto keeps its hosted zone %s (moto has no CloudFormation delete for AWS::Route53::HostedZone; AWS deletes it, once only SOA and NS are left)", s.name, id.PhysicalResourceId)
		}
	}
}

var describeEC2 = map[string]string{
	"AWS::EC2::Subnet":         "describe-subnets",
	"AWS::EC2::SecurityGroup":  "describe-security-groups",
	"AWS::EC2::LaunchTemplate": "describe-launch-templates",
}

// TestECRStack deploys ecr.yaml: four repositories and the registry
// prefix that signpost.yaml and `make images-push` take.
func TestECRStack(t *testing.T) {
	c := cli{t: t, endpoint: startMoto(t)}
	s := createStack(c, "signpost-ecr", filepath.Join("..", "ecr.yaml"), nil)
	if s.Status != "CREATE_COMPLETE" {
		t.Fatalf("status %s", s.Status)
	}
	var repos struct {
		Repositories []struct{ RepositoryName string }
	}
	c.json(&repos, "ecr", "describe-repositories")
	var names []string
	for _, r := range repos.Repositories {
		names = append(names, r.RepositoryName)
	}
	sort.Strings(names)
	if want := []string{"signpost/calc", "signpost/portal", "signpost/signpost", "signpost/time"}; !slices.Equal(names, want) {
		t.Errorf("repositories %v, want %v", names, want)
	}
	if got, want := s.Outputs["RegistryPrefix"], "123456789012.dkr.ecr.us-east-1.amazonaws.com/signpost"; got != want {
		t.Errorf("RegistryPrefix %q, want %q", got, want)
	}
	deleteStack(t, s)
	c.json(&repos, "ecr", "describe-repositories")
	if len(repos.Repositories) != 0 {
		t.Errorf("repositories left after the stack's deletion: %v", repos.Repositories)
	}
}

// TestServerStack deploys the server backend, with the embedded store and
// with etcd: the servers on their fixed addresses, the agents pointed at
// every one. The Resolver endpoint, rule and association are not emulated
// by moto (motoSkips): their wiring is checked by cfn-lint only.
func TestServerStack(t *testing.T) {
	tpl := readTemplate(t, templatePath)
	c := cli{t: t, endpoint: startMoto(t)}
	for _, v := range []variant{{Name: "server-embedded", Backend: "server", Store: "embedded"}, {Name: "server-etcd", Backend: "server", Store: "etcd"}} {
		t.Run(v.Name, func(t *testing.T) {
			c := cli{t: t, endpoint: c.endpoint}
			s := createStack(c, "signpost-"+v.Name, templatePath, v.params())
			checkCreated(t, s, tpl, v)
			addrs := map[string]string{"Server1": "10.0.0.53"}
			if v.Store == "etcd" {
				addrs["Server2"] = "10.0.1.53"
			}
			for id, ip := range addrs {
				out := c.run("ec2", "describe-instances", "--instance-ids", s.physical(id), "--query", "Reservations[0].Instances[0].PrivateIpAddress")
				if strings.Trim(strings.TrimSpace(out), `"`) != ip {
					t.Errorf("%s at %s, want %s", id, out, ip)
				}
			}
			if got, want := s.Outputs["ServerAddresses"], strings.Join(slices.Sorted(func(y func(string) bool) {
				for _, ip := range addrs {
					if !y(ip) {
						return
					}
				}
			}), ","); got != want {
				t.Errorf("ServerAddresses %q, want %q", got, want)
			}
			_, agent := taskDef(c, s.physical("AgentTaskDefinition"))
			servers := "http://10.0.0.53:8080"
			if v.Store == "etcd" {
				servers += ",http://10.0.1.53:8080" // every server, to fail over
			}
			wantArgs(t, "agent", agent.Command, "--server", servers, "--token-file", "/etc/signpost/token", "--advertise-ip", "ec2")
			deleteStack(t, s)
		})
	}
}

// TestRoute53StackDeployCommand runs the README's one command, `aws
// cloudformation deploy`, against moto. moto answers the change set with
// CREATE_COMPLETE and every resource, but no outputs (its change-set path
// does not compute them; create-stack does, see TestRoute53Stack).
func TestRoute53StackDeployCommand(t *testing.T) {
	tpl := readTemplate(t, templatePath)
	c := cli{t: t, endpoint: startMoto(t)}
	v := variant{Name: "route53", Backend: "route53"}
	abs, _ := filepath.Abs(templatePath)
	args := []string{"cloudformation", "deploy", "--template-file", abs, "--stack-name", "signpost",
		"--capabilities", "CAPABILITY_IAM", "--parameter-overrides"}
	for k, val := range v.params() {
		args = append(args, k+"="+val)
	}
	c.run(args...)
	s := describeStack(c, "signpost")
	want, _ := tpl.expected(t, v)
	if s.Status != "CREATE_COMPLETE" {
		t.Fatalf("status %s", s.Status)
	}
	for id, typ := range want {
		if _, ok := s.Resources[id]; !ok && !motoSkips[typ] {
			t.Errorf("resource %s (%s) missing", id, typ)
		}
	}
	if len(s.Outputs) != 0 {
		t.Logf("moto now gives outputs after a change set: %v", s.Outputs)
	}
}

// TestRoute53Stack deploys the Route 53 backend and checks its wiring:
// the private zone on the stack's VPC, the agent as a DAEMON with the
// Docker socket and the zone id, the sweep on its EventBridge rule, the
// roles scoped to the zone, the services on dynamic host ports. Then the
// real agent, run with the template's command line, registers three real
// containers into that zone, removes one when it stops, and the README's
// cleanup empties the zone before the stack is deleted.
func TestRoute53Stack(t *testing.T) {
	tpl := readTemplate(t, templatePath)
	c := cli{t: t, endpoint: startMoto(t)}
	v := variant{Name: "route53", Backend: "route53"}
	s := createStack(c, "signpost", templatePath, v.params())
	checkCreated(t, s, tpl, v)
	zoneID := s.Outputs["ZoneId"]
	if zoneID == "" || zoneID != s.physical("PrivateHostedZone") {
		t.Fatalf("ZoneId output %q, resource %q", zoneID, s.physical("PrivateHostedZone"))
	}

	var hz struct {
		HostedZone struct {
			Name   string
			Config struct{ PrivateZone bool }
		}
		VPCs []struct{ VPCId string }
	}
	c.json(&hz, "route53", "get-hosted-zone", "--id", zoneID)
	if strings.TrimSuffix(hz.HostedZone.Name, ".") != zoneName { // AWS ends it with a dot, moto does not
		t.Errorf("hosted zone %q, want %s.", hz.HostedZone.Name, zoneName)
	}
	// AWS makes the zone private to the stack's VPC (the VPCs property);
	// moto 5.2's CloudFormation makes every AWS::Route53::HostedZone public
	// and drops VPCs. Should moto learn it, hold it to AWS's behaviour.
	privateInMoto := hz.HostedZone.Config.PrivateZone
	if privateInMoto && (len(hz.VPCs) != 1 || hz.VPCs[0].VPCId != s.physical("Vpc")) {
		t.Errorf("private zone on VPCs %+v, want the stack's %s", hz.VPCs, s.physical("Vpc"))
	}
	if !privateInMoto {
		t.Logf("moto created the hosted zone public, without the stack's VPC (a gap of moto's CloudFormation: it ignores VPCs)")
	}

	// The roles, as IAM holds them: this zone's ARN, resolved.
	for role, policy := range map[string]string{"AgentTaskRole": "signpost-agent-route53", "SweepTaskRole": "signpost-check-route53"} {
		var p struct{ PolicyDocument json.RawMessage }
		c.json(&p, "iam", "get-role-policy", "--role-name", s.physical(role), "--policy-name", policy)
		var doc struct {
			Statement []struct {
				Action   any
				Resource any
			}
		}
		raw := p.PolicyDocument
		var str string
		if json.Unmarshal(raw, &str) == nil {
			// moto 5.2 answers the document as a Python dict's repr
			// (single quotes), where AWS answers URL-encoded JSON.
			if json.Unmarshal([]byte(str), &doc) != nil {
				raw = []byte(strings.ReplaceAll(str, "'", `"`))
			} else {
				raw = []byte(str)
			}
		}
		if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Statement) == 0 {
			t.Fatalf("%s: policy document %s: %v", role, p.PolicyDocument, err)
		}
		for _, st := range doc.Statement {
			res, err := strs(st.Resource)
			if err != nil || len(res) != 1 || res[0] != "arn:aws:route53:::hostedzone/"+zoneID {
				t.Errorf("%s: statement %v on %v, want only arn:aws:route53:::hostedzone/%s", role, st.Action, st.Resource, zoneID)
			}
		}
	}

	var svcs struct {
		Services []struct {
			SchedulingStrategy string
			TaskDefinition     string
		}
	}
	c.json(&svcs, "ecs", "describe-services", "--cluster", s.physical("Cluster"), "--services", s.physical("AgentService"))
	if len(svcs.Services) != 1 {
		t.Fatalf("agent service %+v, want one", svcs.Services)
	}
	// moto 5.2's CloudFormation creates every AWS::ECS::Service REPLICA,
	// whatever its SchedulingStrategy: the template says DAEMON, and the
	// service is held to it should moto learn it.
	if got := tpl.Resources["AgentService"].Properties["SchedulingStrategy"]; got != "DAEMON" {
		t.Errorf("AgentService: SchedulingStrategy %v in the template, want DAEMON", got)
	}
	if st := svcs.Services[0].SchedulingStrategy; st != "DAEMON" {
		t.Logf("moto created the agent service %s, not DAEMON (moto's CloudFormation ignores SchedulingStrategy)", st)
	}
	mode, agent := taskDef(c, svcs.Services[0].TaskDefinition)
	// moto 5.2's CloudFormation drops a task definition's NetworkMode
	// (it answers bridge): hold the template to host.
	if got := tpl.Resources["AgentTaskDefinition"].Properties["NetworkMode"]; got != "host" {
		t.Errorf("AgentTaskDefinition: NetworkMode %v in the template, want host", got)
	}
	if mode != "host" {
		t.Logf("moto answers the agent's task definition with network mode %q (moto's CloudFormation ignores NetworkMode)", mode)
		mode = "host"
	}
	if mode != "host" || !slices.ContainsFunc(agent.MountPoints, func(m struct{ SourceVolume, ContainerPath string }) bool {
		return m.ContainerPath == "/var/run/docker.sock"
	}) {
		t.Errorf("agent task: network mode %q, mounts %+v; want host and the Docker socket", mode, agent.MountPoints)
	}
	wantArgs(t, "agent", agent.Command, "--backend", "route53", "--zone", zoneName, "--zone-id", zoneID, "--advertise-ip", "ec2")

	var targets struct {
		Targets []struct {
			Arn           string
			EcsParameters struct{ TaskDefinitionArn string }
		}
	}
	c.json(&targets, "events", "list-targets-by-rule", "--rule", s.physical("SweepRule"))
	var cluster struct{ Clusters []struct{ ClusterArn string } }
	c.json(&cluster, "ecs", "describe-clusters", "--clusters", s.physical("Cluster"))
	if len(targets.Targets) != 1 || len(cluster.Clusters) != 1 || targets.Targets[0].Arn != cluster.Clusters[0].ClusterArn ||
		targets.Targets[0].EcsParameters.TaskDefinitionArn != s.physical("SweepTaskDefinition") {
		t.Errorf("sweep rule targets %+v, want the sweep task on cluster %+v", targets.Targets, cluster.Clusters)
	}
	_, sweep := taskDef(c, s.physical("SweepTaskDefinition"))
	wantArgs(t, "sweep", sweep.Command, "--backend", "route53", "--zone-id", zoneID)
	if sweep.Command[0] != "check" {
		t.Errorf("sweep command %q, want signpost check", sweep.Command)
	}

	for id, svc := range map[string]string{"TimeTaskDefinition": "_time._tcp", "CalcTaskDefinition": "_calc._tcp", "PortalTaskDefinition": "portal"} {
		mode, ctr := taskDef(c, s.physical(id))
		if mode != "bridge" || len(ctr.PortMappings) != 1 || ctr.PortMappings[0].HostPort != 0 {
			t.Errorf("%s: network mode %q, ports %+v; want bridge with a dynamic host port", id, mode, ctr.PortMappings)
			continue
		}
		if got := ctr.env(fmt.Sprintf("SERVICE_%d_NAME", ctr.PortMappings[0].ContainerPort)); got != svc {
			t.Errorf("%s: SERVICE_%d_NAME=%q, want %q", id, ctr.PortMappings[0].ContainerPort, got, svc)
		}
	}

	if os.Getenv("SIGNPOST_AWSTEST_NO_DOCKER") == "" {
		registerContainers(t, c, tpl, zoneID, !privateInMoto)
	}
	deleteStack(t, s)
}

// rrset is one record set as the CLI prints it.
type rrset struct {
	Name, Type, SetIdentifier string
	Weight                    *int64
	TTL                       *int64
	ResourceRecords           []struct{ Value string }
}

func (r rrset) String() string {
	var vals []string
	for _, v := range r.ResourceRecords {
		vals = append(vals, v.Value)
	}
	return fmt.Sprintf("%s %s [%s] %s", r.Name, r.Type, r.SetIdentifier, strings.Join(vals, ","))
}

func listRecords(c cli, zoneID string) []rrset {
	c.t.Helper()
	var out struct{ ResourceRecordSets []rrset }
	c.json(&out, "route53", "list-resource-record-sets", "--hosted-zone-id", zoneID)
	return out.ResourceRecordSets
}

func dump(sets []rrset) string {
	var lines []string
	for _, s := range sets {
		lines = append(lines, s.String())
	}
	return strings.Join(lines, "\n")
}
