package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/internal/admin/admintest"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/store"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeDaemon serves the admin API over admintest.Sandboxes and a store in a temp
// dir, and returns its socket.
func fakeDaemon(t *testing.T) (string, *admintest.Sandboxes, *store.DB) {
	t.Helper()
	dir, db := admintest.Dir(t, "icd-cli-")
	sbs := &admintest.Sandboxes{}
	sock := filepath.Join(dir, "admin.sock")
	srv, err := admin.Listen(sock, admin.Backend{
		DefaultPolicy: policy.Policy{Internet: true, DeniedHosts: []string{"*.evil.test"}},
		Sandboxes:     sbs, Store: db,
		Status: func() admin.Status {
			return admin.Status{Version: "9.9.9", Sandboxes: int64(len(sbs.List())), StoreMinFreeBytes: 1 << 30, StoreFreeBytes: 1 << 20}
		},
	}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return sock, sbs, db
}

// captureAll runs the CLI with args and returns its exit code, stdout and
// stderr.
func captureAll(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = outW, errW
	var out, stderr []byte
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); out, _ = io.ReadAll(outR) }()
	go func() { defer wg.Done(); stderr, _ = io.ReadAll(errR) }()
	code := run(args)
	os.Stdout, os.Stderr = oldOut, oldErr
	outW.Close()
	errW.Close()
	wg.Wait()
	return code, string(out), string(stderr)
}

func TestTheSandboxCommandsSayWhatTheyMeanToTheDaemon(t *testing.T) {
	sock, sbs, db := fakeDaemon(t)
	s := []string{"--admin-socket", sock}
	steps := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
		check    func(t *testing.T)
	}{
		{"create prints the namespace path", []string{"sandbox", "create", "web1", "--internet", "off", "--allow", "a.test", "--allow", "192.0.2.0/24", "--quota", "kv.bytes=1KiB", "--quota", "blob.keys=3"},
			0, "/run/netns/icd-web1\n", "", func(t *testing.T) {
				sb, _ := sbs.Get("web1")
				// The flags given replace; the one not given keeps the default.
				if sb.Policy.Internet || !slices.Equal(sb.Policy.AllowedHosts, []string{"a.test", "192.0.2.0/24"}) || !slices.Equal(sb.Policy.DeniedHosts, []string{"*.evil.test"}) {
					t.Errorf("created with %+v", sb.Policy)
				}
				if q, _ := db.Quota("web1"); q.KV.Bytes != 1024 || q.Blob.Keys != 3 {
					t.Errorf("quota %+v", q)
				}
			}},
		{"create without policy flags sends no policy", []string{"sandbox", "create", "plain"}, 0, "/run/netns/icd-plain\n", "", func(t *testing.T) {
			if sb, _ := sbs.Get("plain"); sb.Policy.Internet || sb.Policy.DeniedHosts != nil {
				t.Errorf("a create without flags sent a policy: %+v", sb.Policy)
			}
		}},
		{"an empty --deny clears the list", []string{"sandbox", "policy", "web1", "--deny", ""}, 0, `"denied_hosts": []`, "", func(t *testing.T) {
			if sb, _ := sbs.Get("web1"); sb.Policy.DeniedHosts == nil || len(sb.Policy.DeniedHosts) != 0 || len(sb.Policy.AllowedHosts) != 2 {
				t.Errorf("policy %+v", sb.Policy)
			}
		}},
		{"create takes inbound entries, leaving the rest of the default", []string{"sandbox", "create", "srv", "--inbound", "10.244.0.0/16:8080/tcp", "--inbound", "192.0.2.7"}, 0, "/run/netns/icd-srv\n", "", func(t *testing.T) {
			sb, _ := sbs.Get("srv")
			if !slices.Equal(sb.Policy.Inbound, []string{"10.244.0.0/16:8080/tcp", "192.0.2.7"}) || !sb.Policy.Internet || !slices.Equal(sb.Policy.DeniedHosts, []string{"*.evil.test"}) {
				t.Errorf("created with %+v", sb.Policy)
			}
		}},
		{"policy --inbound replaces the list and keeps the egress", []string{"sandbox", "policy", "srv", "--inbound", "10.96.0.0/12:53/udp"}, 0, `"10.96.0.0/12:53/udp"`, "", func(t *testing.T) {
			sb, _ := sbs.Get("srv")
			if !slices.Equal(sb.Policy.Inbound, []string{"10.96.0.0/12:53/udp"}) || !sb.Policy.Internet {
				t.Errorf("policy %+v", sb.Policy)
			}
		}},
		{"a bad inbound entry is refused naming it, and changes nothing", []string{"sandbox", "policy", "srv", "--inbound", "10.96.0.0/12:53/icmp"}, 1, "", `"10.96.0.0/12:53/icmp": protocol "icmp": want tcp or udp`, func(t *testing.T) {
			if sb, _ := sbs.Get("srv"); !slices.Equal(sb.Policy.Inbound, []string{"10.96.0.0/12:53/udp"}) {
				t.Errorf("policy %+v after a refused change", sb.Policy)
			}
		}},
		{"an empty --inbound closes the sandbox again", []string{"sandbox", "policy", "srv", "--inbound", ""}, 0, "", "", func(t *testing.T) {
			if sb, _ := sbs.Get("srv"); len(sb.Policy.Inbound) != 0 {
				t.Errorf("policy %+v", sb.Policy)
			}
		}},
		{"policy without flags shows it", []string{"sandbox", "policy", "web1"}, 0, `"a.test"`, "", nil},
		{"quota without flags shows it", []string{"sandbox", "quota", "web1"}, 0, `"bytes": 1024`, "", nil},
		{"quota with flags replaces the overrides", []string{"sandbox", "quota", "web1", "--quota", "state.keys=7"}, 0, `"keys": 7`, "", func(t *testing.T) {
			if q, _ := db.Quota("web1"); q.KV.Bytes != 0 || q.State.Keys != 7 {
				t.Errorf("quota %+v", q)
			}
		}},
		{"show gives the record with usage and quota", []string{"sandbox", "show", "web1"}, 0, `"usage"`, "", nil},
		{"list has a header and a row each", []string{"sandbox", "list"}, 0, "NAME", "", nil},
		{"status", []string{"status"}, 0, "UNDER THE FLOOR", "", nil},
		{"status as JSON", []string{"status", "--json"}, 0, `"version": "9.9.9"`, "", nil},
		{"store stats after the check", []string{"store", "--check"}, 0, `"file_bytes"`, "", nil},
		{"--internet takes on or off only", []string{"sandbox", "policy", "web1", "--internet", "yes"}, 1, "", `--internet "yes": want on or off`, nil},
		{"--quota wants a field and a value", []string{"sandbox", "create", "x", "--quota", "kv.bytes"}, 1, "", "want kind.bytes=SIZE", nil},
		{"--quota of keys wants a count", []string{"sandbox", "create", "x", "--quota", "kv.keys=-1"}, 1, "", "not a number of keys", nil},
		{"--quota of bytes wants a size", []string{"sandbox", "create", "x", "--quota", "kv.bytes=lots"}, 1, "", "--quota kv.bytes", nil},
		{"--quota of an unknown field", []string{"sandbox", "create", "x", "--quota", "kv.files=1"}, 1, "", "want one of", nil},
		{"--quota goes with create and quota only, a usage error", []string{"sandbox", "policy", "web1", "--quota", "kv.keys=1"}, 2, "", "--quota goes with sandbox create or sandbox quota, not sandbox policy", nil},
		{"the daemon's refusal is the CLI's error", []string{"sandbox", "create", "web1"}, 1, "", "already exists", nil},
		{"delete --purge", []string{"sandbox", "delete", "--purge", "web1"}, 0, "", "", func(t *testing.T) {
			if _, ok := sbs.Get("web1"); ok {
				t.Error("web1 survived")
			}
		}},
		{"an unknown sandbox command is a usage error", []string{"sandbox", "frob"}, 2, "", "unknown command", nil},
		{"create takes a sandbox's own limits", []string{"sandbox", "create", "lim", "--max-rps", "5", "--max-dns-qps", "0"}, 0, "/run/netns/icd-lim\n", "", func(t *testing.T) {
			sb, _ := sbs.Get("lim")
			if l := sb.Limits; l.RPS == nil || *l.RPS != 5 || l.DNSQPS == nil || *l.DNSQPS != 0 || l.Conns != nil {
				t.Errorf("created with limits %+v, want rps 5, dns 0 (no limit), conns the default (nil)", l)
			}
		}},
		{"policy changes the limits it names and keeps the others", []string{"sandbox", "policy", "lim", "--max-conns", "3", "--max-rps", "default"}, 0, "", "", func(t *testing.T) {
			sb, _ := sbs.Get("lim")
			if l := sb.Limits; l.RPS != nil || l.Conns == nil || *l.Conns != 3 || l.DNSQPS == nil || *l.DNSQPS != 0 {
				t.Errorf("limits %+v, want rps back to the default, conns 3, dns kept at 0", l)
			}
		}},
		{"a limit is a number or default", []string{"sandbox", "policy", "lim", "--max-rps", "-2"}, 1, "", `--max-rps "-2": want a number (0 for no limit) or default`, nil},
		{"limits go with create and policy only, a usage error", []string{"sandbox", "list", "--max-rps", "1"}, 2, "", "--max-rps goes with", nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			code, out, stderr := captureAll(t, append(st.args, s...)...)
			if code != st.wantCode || !strings.Contains(out, st.wantOut) || !strings.Contains(stderr, st.wantErr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d, stdout containing %q, stderr containing %q", code, out, stderr, st.wantCode, st.wantOut, st.wantErr)
			}
			if st.check != nil {
				st.check(t)
			}
		})
	}
}
