package main

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// capture runs the CLI with args and returns its exit code and stderr.
func capture(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	code := run(args)
	os.Stderr = old
	w.Close()
	b, _ := io.ReadAll(r)
	return code, string(b)
}

func TestCLIErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\nlisten:\n  dns_port: 53\n  htpp: 127.0.0.1:1\n"), 0o644)
	typo := filepath.Join(t.TempDir(), "typo.yaml")
	os.WriteFile(typo, []byte("version: 1\ndns:\n  ttl: long\n"), 0o644)
	missing := filepath.Join(t.TempDir(), "nothing-here.sock")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  []string
	}{
		{"serve with an unknown field names it and its line", []string{"serve", "--config", bad}, 1, []string{"line 4", "htpp"}},
		{"serve with a mistyped field names it and its line", []string{"serve", "--config", typo}, 1, []string{"line 3", "field dns.ttl"}},
		{"config check reports the same", []string{"config", "check", bad}, 1, []string{"line 4", "htpp"}},
		{"a bad flag value is reported after flags", []string{"serve", "--metrics-listen", "nonsense"}, 1, []string{"listen.metrics", "nonsense"}},
		{"a client without a daemon says how to find one", []string{"sandbox", "list", "--admin-socket", missing}, 1, []string{"cannot reach the daemon", "INTERCEPTD_SOCKET"}},
		{"an unknown command is a usage error", []string{"frobnicate"}, 2, []string{"unknown command"}},
		{"sandbox create without a name is a usage error", []string{"sandbox", "create"}, 2, []string{"usage"}},
		{"run without a command is a usage error", []string{"run"}, 2, []string{"usage"}},
		{"run with both --user and --privileged is a usage error", []string{"run", "--user", "nobody", "--privileged", "--", "true"}, 2, []string{"exclude each other"}},
		{"run --user root points at --privileged", []string{"run", "--user", "root", "--admin-socket", missing, "--", "true"}, 1, []string{"--privileged"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stderr := capture(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.wantCode, stderr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not mention %q", stderr, w)
				}
			}
		})
	}
}

func TestConfigDefaultPrintsTheEmbeddedConfig(t *testing.T) {
	r, w, _ := os.Pipe()
	old := os.Stdout
	os.Stdout = w
	code := run([]string{"config", "default"})
	os.Stdout = old
	w.Close()
	out, _ := io.ReadAll(r)
	if code != 0 || !strings.Contains(string(out), "host: my.kv") || !strings.Contains(string(out), "version: 1") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestServeRunsTwoGoProcessorsPerCPUUnlessGOMAXPROCSChoseIt(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(base) })
	tests := []struct {
		name, env string
		want      int
	}{
		{"no GOMAXPROCS in the environment: two per CPU", "", procsPerCPU * base},
		{"GOMAXPROCS in the environment: left as Go set it", "3", base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runtime.GOMAXPROCS(base)
			t.Setenv("GOMAXPROCS", tt.env)
			if got := setProcs(); got != tt.want || runtime.GOMAXPROCS(0) != tt.want {
				t.Errorf("setProcs() = %d, GOMAXPROCS %d; want %d", got, runtime.GOMAXPROCS(0), tt.want)
			}
		})
	}
}
