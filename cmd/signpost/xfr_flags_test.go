package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestXfrFlags(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "xfr.key")
	if err := os.WriteFile(keyFile, []byte("signpost-xfr:hmac-sha256:c2VjcmV0c2VjcmV0c2VjcmV0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) (string, error) {
		fs := newFlagSet("server", "")
		mk := serverFlags(fs)
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		cfg, err := mk()
		return strings.Join(strs(cfg.Xfr.Allow), " ") + "|" + strings.Join(strs(cfg.Xfr.Notify), " "), err
	}
	if got, err := parse(); err != nil || got != "|" {
		t.Errorf("default: %q %v, want transfers off", got, err)
	}
	got, err := parse("--xfr-allow", "127.0.0.1, 10.1.2.3/24", "--xfr-notify", "127.0.0.1,10.1.2.9:5353")
	if want := "127.0.0.1/32 10.1.2.0/24|127.0.0.1:53 10.1.2.9:5353"; err != nil || got != want {
		t.Errorf("set: %q %v, want %q", got, err, want)
	}
	fs := newFlagSet("server", "")
	mk := serverFlags(fs)
	if err := fs.Parse([]string{"--xfr-allow", "127.0.0.1", "--xfr-tsig-file", keyFile}); err != nil {
		t.Fatal(err)
	}
	if cfg, err := mk(); err != nil || cfg.Xfr.Key == nil || cfg.Xfr.Key.Name != "signpost-xfr." {
		t.Errorf("--xfr-tsig-file: %+v %v", cfg.Xfr.Key, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--xfr-allow", "everyone"}, `--xfr-allow "everyone"`},
		{[]string{"--xfr-allow", "127.0.0.1", "--xfr-notify", "10.0.0.7"}, "--xfr-notify 10.0.0.7:53: not in --xfr-allow"},
		{[]string{"--xfr-allow", "127.0.0.1", "--xfr-notify", "ns2.example"}, `--xfr-notify "ns2.example"`},
		{[]string{"--xfr-tsig-file", keyFile}, "needs --xfr-allow"},
		{[]string{"--xfr-allow", "127.0.0.1", "--xfr-tsig-file", filepath.Join(dir, "missing")}, "missing"},
		{[]string{"--xfr-allow", "127.0.0.1", "--xfr-max-transfers", "0"}, "--xfr-max-transfers 0"},
	} {
		if _, err := parse(tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want an error naming %q", tt.args, err, tt.want)
		}
	}
}

func strs[T interface{ String() string }](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.String()
	}
	return out
}
