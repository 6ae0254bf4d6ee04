package awstest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
)

// templatePath is the main template, relative to this package.
var templatePath = filepath.Join("..", "signpost.yaml")

// resource is one resource of a template, as far as the tests need it.
type resource struct {
	Type       string         `yaml:"Type"`
	Condition  string         `yaml:"Condition"`
	Properties map[string]any `yaml:"Properties"`
}

// template is a parsed CloudFormation template. Short-form intrinsic
// functions (!Ref, !Sub...) are read as their plain value: the tests look
// at literal action names and at which function builds a resource ARN,
// never at what a function returns.
type template struct {
	Resources map[string]resource `yaml:"Resources"`
	Outputs   map[string]struct {
		Condition string `yaml:"Condition"`
	} `yaml:"Outputs"`
	Conditions map[string]any `yaml:"Conditions"`
}

func readTemplate(t *testing.T, path string) *template {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tpl template
	if err := yaml.Unmarshal(b, &tpl); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if len(tpl.Resources) == 0 {
		t.Fatalf("%s: no resources", path)
	}
	return &tpl
}

// variant is one choice of the template's parameters.
type variant struct {
	Name    string
	Backend string // route53 or server
	Store   string // embedded or etcd
}

// conditionValues evaluates the template's conditions for v. The
// evaluator knows the template's three conditions by name: a new one
// fails the test until it is taught here.
func (tpl *template) conditionValues(t *testing.T, v variant) map[string]bool {
	t.Helper()
	known := map[string]bool{
		"IsRoute53": v.Backend == "route53",
		"IsServer":  v.Backend == "server",
		"UseEtcd":   v.Backend == "server" && v.Store == "etcd",
	}
	for name := range tpl.Conditions {
		if _, ok := known[name]; !ok {
			t.Fatalf("the template has a condition %q the tests cannot evaluate: add it to conditionValues", name)
		}
	}
	return known
}

// expected returns the logical ids of the resources and outputs that
// variant v creates.
func (tpl *template) expected(t *testing.T, v variant) (resources map[string]string, outputs []string) {
	t.Helper()
	cond := tpl.conditionValues(t, v)
	on := func(c string) bool {
		if c == "" {
			return true
		}
		val, ok := cond[c]
		if !ok {
			t.Fatalf("unknown condition %q", c)
		}
		return val
	}
	resources = map[string]string{}
	for id, r := range tpl.Resources {
		if on(r.Condition) {
			resources[id] = r.Type
		}
	}
	for id, o := range tpl.Outputs {
		if on(o.Condition) {
			outputs = append(outputs, id)
		}
	}
	sort.Strings(outputs)
	return resources, outputs
}

// strs returns v as a list of strings: a string, or a list of them.
func strs(v any) ([]string, error) {
	switch x := v.(type) {
	case string:
		return []string{x}, nil
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%v is not a string", e)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%v (%T) is neither a string nor a list of strings", v, v)
}

// statement is one IAM policy statement of the template.
type statement struct {
	Policy    string
	Actions   []string
	Resource  []string
	Condition map[any]any
}

// roleStatements returns the statements of a role's inline policies.
func (tpl *template) roleStatements(t *testing.T, role string) []statement {
	t.Helper()
	r, ok := tpl.Resources[role]
	if !ok || r.Type != "AWS::IAM::Role" {
		t.Fatalf("the template has no IAM role %s", role)
	}
	pols, _ := r.Properties["Policies"].([]any)
	var out []statement
	for _, p := range pols {
		pm, _ := p.(map[any]any)
		doc, _ := pm["PolicyDocument"].(map[any]any)
		sts, _ := doc["Statement"].([]any)
		for _, s := range sts {
			sm, _ := s.(map[any]any)
			if sm["Effect"] != "Allow" {
				t.Fatalf("%s: a statement that is not Allow: %v", role, sm)
			}
			acts, err := strs(sm["Action"])
			if err != nil {
				t.Fatalf("%s: Action: %v", role, err)
			}
			res, err := strs(sm["Resource"])
			if err != nil {
				t.Fatalf("%s: Resource: %v", role, err)
			}
			cond, _ := sm["Condition"].(map[any]any)
			out = append(out, statement{Policy: fmt.Sprint(pm["PolicyName"]), Actions: acts, Resource: res, Condition: cond})
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no policy statements", role)
	}
	return out
}

// route53Actions returns the set of "route53:" actions a role is granted,
// checking that each is granted on this zone's ARN only.
func (tpl *template) route53Actions(t *testing.T, role string) map[string]bool {
	t.Helper()
	const zoneARN = "arn:${AWS::Partition}:route53:::hostedzone/${PrivateHostedZone}"
	got := map[string]bool{}
	for _, st := range tpl.roleStatements(t, role) {
		for _, a := range st.Actions {
			svc, op, _ := strings.Cut(a, ":")
			if svc != "route53" {
				t.Errorf("%s grants %s: the role should hold Route 53 calls only", role, a)
				continue
			}
			if strings.ContainsAny(op, "*?") {
				t.Errorf("%s grants the wildcard action %s", role, a)
			}
			for _, r := range st.Resource {
				if r != zoneARN {
					t.Errorf("%s grants %s on %q, want only this zone's ARN %s", role, a, r, zoneARN)
				}
			}
			got[op] = true
		}
	}
	return got
}
