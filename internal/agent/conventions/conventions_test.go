package conventions

import (
	"reflect"
	"strings"
	"testing"
)

func tcp(n uint16) ContainerPort { return ContainerPort{n, "tcp"} }
func udp(n uint16) ContainerPort { return ContainerPort{n, "udp"} }

func TestParse(t *testing.T) {
	type want struct {
		ports    []Port
		ignored  bool
		warnVars []string // variables named by warnings, in order
	}
	cases := []struct {
		name string
		in   Input
		want want
	}{
		{
			name: "original agent: SERVICE_8081_NAME, other env ignored",
			in: Input{Env: []string{"SERVICE_8081_NAME=calc", "CALC_PASSWORD=hunter2", "PATH=/bin"},
				Ports: []ContainerPort{tcp(8081)}},
			want: want{ports: []Port{{ContainerPort: tcp(8081), Service: "calc", Weight: 1}}},
		},
		{
			name: "SRV form of the name",
			in:   Input{Env: []string{"SERVICE_8081_NAME=_calc._tcp"}, Ports: []ContainerPort{tcp(8081)}},
			want: want{ports: []Port{{ContainerPort: tcp(8081), Service: "calc", Weight: 1}}},
		},
		{
			name: "no name: nothing registered, no warning",
			in:   Input{Env: []string{"SERVICE_TAGS=a"}, Ports: []ContainerPort{tcp(80)}},
			want: want{},
		},
		{
			name: "SERVICE_NAME with one port: bare name",
			in:   Input{Env: []string{"SERVICE_NAME=web"}, Ports: []ContainerPort{tcp(80)}},
			want: want{ports: []Port{{ContainerPort: tcp(80), Service: "web", Weight: 1}}},
		},
		{
			name: "SERVICE_NAME with several ports: port suffix; own name wins",
			in: Input{Env: []string{"SERVICE_NAME=web", "SERVICE_9090_NAME=metrics"},
				Ports: []ContainerPort{tcp(80), tcp(443), tcp(9090)}},
			want: want{ports: []Port{
				{ContainerPort: tcp(80), Service: "web-80", Weight: 1},
				{ContainerPort: tcp(443), Service: "web-443", Weight: 1},
				{ContainerPort: tcp(9090), Service: "metrics", Weight: 1},
			}},
		},
		{
			name: "labels win over env",
			in: Input{Env: []string{"SERVICE_8081_NAME=fromenv", "SERVICE_8081_WEIGHT=3"},
				Labels: map[string]string{"SERVICE_8081_NAME": "fromlabel"},
				Ports:  []ContainerPort{tcp(8081)}},
			want: want{ports: []Port{{ContainerPort: tcp(8081), Service: "fromlabel", Weight: 3}}},
		},
		{
			name: "tags weight priority and metadata, port-specific over container-wide",
			in: Input{Env: []string{
				"SERVICE_8081_NAME=calc", "SERVICE_8081_TAGS=a, b,,c", "SERVICE_WEIGHT=5", "SERVICE_8081_WEIGHT=7",
				"SERVICE_PRIORITY=2", "SERVICE_REGION=eu", "SERVICE_8081_VERSION=1.2", "SERVICE_8081_REGION=us",
			}, Ports: []ContainerPort{tcp(8081)}},
			want: want{ports: []Port{{ContainerPort: tcp(8081), Service: "calc", Tags: []string{"a", "b", "c"},
				Weight: 7, Priority: 2, Meta: map[string]string{"region": "us", "version": "1.2"}}}},
		},
		{
			name: "check settings kept apart, never metadata",
			in: Input{Env: []string{"SERVICE_8081_NAME=calc", "SERVICE_8081_CHECK_HTTP=/health",
				"SERVICE_CHECK_INTERVAL=5s", "SERVICE_8081_CHECK_TIMEOUT=1s", "SERVICE_8082_CHECK=none", "SERVICE_8082_NAME=x"},
				Ports: []ContainerPort{tcp(8081), tcp(8082)}},
			want: want{ports: []Port{
				{ContainerPort: tcp(8081), Service: "calc", Weight: 1, Check: map[string]Setting{
					"http":     {"SERVICE_8081_CHECK_HTTP", "/health"},
					"interval": {"SERVICE_CHECK_INTERVAL", "5s"},
					"timeout":  {"SERVICE_8081_CHECK_TIMEOUT", "1s"},
				}},
				{ContainerPort: tcp(8082), Service: "x", Weight: 1, Check: map[string]Setting{
					"":         {"SERVICE_8082_CHECK", "none"},
					"interval": {"SERVICE_CHECK_INTERVAL", "5s"},
				}},
			}},
		},
		{
			name: "udp: the port matches tcp and udp exactly; _x._udp picks udp",
			in: Input{Env: []string{"SERVICE_53_NAME=_dns._udp", "SERVICE_5353_NAME=mdns"},
				Ports: []ContainerPort{tcp(53), udp(53), udp(5353)}},
			want: want{ports: []Port{
				{ContainerPort: udp(53), Service: "dns", Weight: 1},
				{ContainerPort: udp(5353), Service: "mdns", Weight: 1},
			}},
		},
		{
			name: "SERVICE_IGNORE skips the container",
			in:   Input{Env: []string{"SERVICE_NAME=web", "SERVICE_IGNORE=1"}, Ports: []ContainerPort{tcp(80)}},
			want: want{ignored: true},
		},
		{
			name: "SERVICE_IGNORE=false does not",
			in:   Input{Env: []string{"SERVICE_NAME=web", "SERVICE_IGNORE=false"}, Ports: []ContainerPort{tcp(80)}},
			want: want{ports: []Port{{ContainerPort: tcp(80), Service: "web", Weight: 1}}},
		},
		{
			name: "SERVICE_<port>_IGNORE skips the port and the suffix count",
			in:   Input{Env: []string{"SERVICE_NAME=web", "SERVICE_9090_IGNORE=true"}, Ports: []ContainerPort{tcp(80), tcp(9090)}},
			want: want{ports: []Port{{ContainerPort: tcp(80), Service: "web", Weight: 1}}},
		},
		{
			name: "lower-case label keys",
			in:   Input{Labels: map[string]string{"service_8081_name": "calc"}, Ports: []ContainerPort{tcp(8081)}},
			want: want{ports: []Port{{ContainerPort: tcp(8081), Service: "calc", Weight: 1}}},
		},
		{
			name: "bad: invalid name, the port skipped, others kept",
			in: Input{Env: []string{"SERVICE_8081_NAME=Calc Service!", "SERVICE_8082_NAME=ok"},
				Ports: []ContainerPort{tcp(8081), tcp(8082)}},
			want: want{ports: []Port{{ContainerPort: tcp(8082), Service: "ok", Weight: 1}},
				warnVars: []string{"SERVICE_8081_NAME"}},
		},
		{
			name: "bad: non-numeric and out-of-range ports in keys",
			in: Input{Env: []string{"SERVICE_80A_NAME=x", "SERVICE_HTTP_NAME=y", "SERVICE_99999_NAME=z", "SERVICE_0_NAME=w", "SERVICE_80_NAME=ok"},
				Ports: []ContainerPort{tcp(80)}},
			want: want{ports: []Port{{ContainerPort: tcp(80), Service: "ok", Weight: 1}},
				warnVars: []string{"SERVICE_0_NAME", "SERVICE_80A_NAME", "SERVICE_99999_NAME", "SERVICE_HTTP_NAME"}},
		},
		{
			name: "bad: a port the container does not have",
			in:   Input{Env: []string{"SERVICE_9999_NAME=ghost", "SERVICE_80_NAME=ok"}, Ports: []ContainerPort{tcp(80)}},
			want: want{ports: []Port{{ContainerPort: tcp(80), Service: "ok", Weight: 1}},
				warnVars: []string{"SERVICE_9999_NAME"}},
		},
		{
			name: "bad: weight and priority",
			in: Input{Env: []string{"SERVICE_80_NAME=a", "SERVICE_80_WEIGHT=heavy", "SERVICE_81_NAME=b", "SERVICE_81_PRIORITY=-1", "SERVICE_82_NAME=c", "SERVICE_82_WEIGHT=0"},
				Ports: []ContainerPort{tcp(80), tcp(81), tcp(82)}},
			want: want{warnVars: []string{"SERVICE_80_WEIGHT", "SERVICE_81_PRIORITY", "SERVICE_82_WEIGHT"}},
		},
		{
			name: "bad: udp name on a tcp-only port",
			in:   Input{Env: []string{"SERVICE_80_NAME=_web._udp"}, Ports: []ContainerPort{tcp(80)}},
			want: want{warnVars: []string{"SERVICE_80_NAME"}},
		},
		{
			name: "bad: nothing after the port",
			in:   Input{Env: []string{"SERVICE_80=x", "SERVICE_80_NAME=ok"}, Ports: []ContainerPort{tcp(80)}},
			want: want{ports: []Port{{ContainerPort: tcp(80), Service: "ok", Weight: 1}}, warnVars: []string{"SERVICE_80"}},
		},
		{
			name: "bad: invalid SERVICE_NAME warns once",
			in:   Input{Env: []string{"SERVICE_NAME=No Good"}, Ports: []ContainerPort{tcp(80), tcp(81)}},
			want: want{warnVars: []string{"SERVICE_NAME"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Container = "web-1"
			got := Parse(tc.in)
			for i := range got.Ports { // checked by TestGivenName
				got.Ports[i].GivenName = ""
			}
			if got.Ignored != tc.want.ignored {
				t.Errorf("Ignored = %v, want %v", got.Ignored, tc.want.ignored)
			}
			if !reflect.DeepEqual(got.Ports, tc.want.ports) {
				t.Errorf("Ports:\n got %+v\nwant %+v", got.Ports, tc.want.ports)
			}
			var vars []string
			for _, w := range got.Warnings {
				vars = append(vars, w.Var)
				if !strings.Contains(w.Error(), "web-1") || !strings.Contains(w.Error(), w.Var) {
					t.Errorf("warning %q does not name the container and the variable", w.Error())
				}
			}
			if !reflect.DeepEqual(vars, tc.want.warnVars) {
				t.Errorf("warnings name %v, want %v (%v)", vars, tc.want.warnVars, got.Warnings)
			}
		})
	}
}

func TestParseNeverReadsOtherVariables(t *testing.T) {
	res := Parse(Input{Container: "c", Env: []string{"SERVICE_80_NAME=web", "CALC_PASSWORD=hunter2", "MY_SERVICE_TOKEN=x", "SERVICEX_80_NAME=no"},
		Labels: map[string]string{"com.example.secret": "s"}, Ports: []ContainerPort{tcp(80)}})
	if len(res.Ports) != 1 {
		t.Fatalf("ports = %+v", res.Ports)
	}
	if res.Ports[0].Meta != nil {
		t.Errorf("metadata %v: only SERVICE_* variables may be read", res.Ports[0].Meta)
	}
}

// TestGivenName checks the name as the container wrote it, which the
// Route 53 layout names its record sets after.
func TestGivenName(t *testing.T) {
	cases := []struct {
		name string
		in   Input
		want map[string]string // port -> given name
	}{
		{"plain", Input{Env: []string{"SERVICE_8081_NAME=calc"}, Ports: []ContainerPort{tcp(8081)}}, map[string]string{"8081/tcp": "calc"}},
		{"SRV form", Input{Env: []string{"SERVICE_8081_NAME=_calc._tcp"}, Ports: []ContainerPort{tcp(8081)}}, map[string]string{"8081/tcp": "_calc._tcp"}},
		{"trimmed", Input{Env: []string{"SERVICE_8081_NAME= calc "}, Ports: []ContainerPort{tcp(8081)}}, map[string]string{"8081/tcp": "calc"}},
		{"udp SRV form", Input{Env: []string{"SERVICE_53_NAME=_dns._udp"}, Ports: []ContainerPort{udp(53), tcp(53)}}, map[string]string{"53/udp": "_dns._udp"}},
		{"SERVICE_NAME, one port", Input{Env: []string{"SERVICE_NAME=_web._tcp"}, Ports: []ContainerPort{tcp(80)}}, map[string]string{"80/tcp": "_web._tcp"}},
		{"SERVICE_NAME, several ports", Input{Env: []string{"SERVICE_NAME=web", "SERVICE_9090_NAME=_metrics._tcp"}, Ports: []ContainerPort{tcp(80), tcp(443), tcp(9090)}},
			map[string]string{"80/tcp": "web-80", "443/tcp": "web-443", "9090/tcp": "_metrics._tcp"}},
		{"SERVICE_NAME SRV form, several ports", Input{Env: []string{"SERVICE_NAME=_web._tcp"}, Ports: []ContainerPort{tcp(80), tcp(443)}},
			map[string]string{"80/tcp": "_web-80._tcp", "443/tcp": "_web-443._tcp"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			for _, p := range Parse(tc.in).Ports {
				got[p.String()] = p.GivenName
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("given names %v, want %v", got, tc.want)
			}
		})
	}
}

// TestTyposAndNormalized checks that a key close to a known one is
// reported as a likely typo (and still read as metadata), that real
// metadata keys are not, and that an upper-case name is reported once.
func TestTyposAndNormalized(t *testing.T) {
	res := Parse(Input{
		Container: "web-1",
		Env: []string{"SERVICE_8081_NAM=web", "SERVICE_8082_NAME=MyWeb", "SERVICE_8082_WEIGTH=5",
			"SERVICE_TAG=a", "SERVICE_8082_VERSION=1.2", "SERVICE_8082_ROLE=primary", "SERVICE_8082_CHECK_HTP=/h"},
		Ports: []ContainerPort{{8081, "tcp"}, {8082, "tcp"}},
	})
	typos := map[string]string{}
	for _, w := range res.Typos {
		typos[w.Var] = w.Reason
	}
	want := map[string]string{
		"SERVICE_8081_NAM":       "SERVICE_8081_NAME",
		"SERVICE_8082_WEIGTH":    "SERVICE_8082_WEIGHT",
		"SERVICE_TAG":            "SERVICE_TAGS",
		"SERVICE_8082_CHECK_HTP": "SERVICE_8082_CHECK_HTTP",
	}
	for v, k := range want {
		if !strings.Contains(typos[v], k) {
			t.Errorf("%s: typo reason %q, want it to name %s", v, typos[v], k)
		}
	}
	if len(typos) != len(want) {
		t.Errorf("typos %v, want exactly %v", typos, want)
	}
	if len(res.Ports) != 1 || res.Ports[0].Service != "myweb" || res.Ports[0].Meta["weigth"] != "5" {
		t.Fatalf("ports %+v, want myweb on 8082 with the typo read as metadata", res.Ports)
	}
	if len(res.Normalized) != 1 || res.Normalized[0].Var != "SERVICE_8082_NAME" || !strings.Contains(res.Normalized[0].Reason, `"myweb"`) {
		t.Errorf("normalized %+v, want one naming SERVICE_8082_NAME and myweb", res.Normalized)
	}
}
