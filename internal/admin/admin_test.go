package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/interceptd/interceptd/internal/admin/admintest"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testStore is a real store whose consistency check a test can fail, and
// whose KV and state figures a test can make unavailable, as etcd's are
// while it is down (the local kinds are still read).
type testStore struct {
	*store.DB
	checkErr  atomic.Pointer[error]
	remoteErr atomic.Pointer[error]
}

func (s *testStore) Usage(sandbox string) (store.Amounts, error) {
	a, err := s.DB.Usage(sandbox)
	if e := s.remoteErr.Load(); e != nil && err == nil {
		a.KV, a.State = store.Amount{}, store.Amount{}
		return a, *e
	}
	return a, err
}

func (s *testStore) Quota(sandbox string) (store.Amounts, error) {
	a, err := s.DB.Quota(sandbox)
	if e := s.remoteErr.Load(); e != nil && err == nil {
		a.KV, a.State = store.Amount{}, store.Amount{}
		return a, *e
	}
	return a, err
}

func (s *testStore) Check() error {
	if err := s.checkErr.Load(); err != nil {
		return *err
	}
	return s.DB.Check()
}

type apiFixture struct {
	c      *Client
	socket string
	sb     *admintest.Sandboxes
	st     *testStore
	reg    *prometheus.Registry
	seen   atomic.Pointer[router.Env] // what the last handler call was given
}

// newAPI serves the admin API for a fake manager and a real store on a
// socket of its own, and returns the CLI's client for it.
func newAPI(t *testing.T, with ...func(*Backend)) *apiFixture {
	t.Helper()
	dir, db := admintest.Dir(t, "icd-admin-")
	def := policy.Policy{Internet: false, DeniedHosts: []string{"*.evil.test"}}
	f := &apiFixture{sb: &admintest.Sandboxes{Default: def}, st: &testStore{DB: db}, reg: prometheus.NewRegistry()}
	record := router.HandlerFunc(func(w http.ResponseWriter, r *http.Request, env router.Env) error {
		f.seen.Store(&env)
		fmt.Fprintf(w, "%s %s", r.Method, r.URL.Path)
		return nil
	})
	be := Backend{
		DefaultPolicy: def,
		Sandboxes:     f.sb,
		Store:         f.st,
		Handlers: []HandlerInfo{
			{Host: "my.kv", Kind: "kv", Space: "default", Handler: record},
			{Host: "state.do", Kind: "state", Space: "default", PerSandbox: true, Handler: record},
		},
		Namespace: func(ns string) router.Handler { return record },
		Status:    func() Status { return Status{Version: "test", Sandboxes: int64(len(f.sb.List()))} },
	}
	for _, w := range with {
		w(&be)
	}
	f.socket = filepath.Join(dir, "admin.sock")
	srv, err := Listen(f.socket, be, f.reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	f.c = NewClient(f.socket)
	return f
}

// statusOfErr is the HTTP status of an API error (0 for none).
func statusOfErr(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("not an API error: %v", err)
	}
	return ae.Status
}

func TestTheAdminSocketIsOpenToItsOwnerOnlyAndToOneDaemon(t *testing.T) {
	f := newAPI(t)
	fi, err := os.Stat(f.socket)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("socket mode %o, want 600", mode)
	}
	if _, err := Listen(f.socket, Backend{}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second daemon on the same socket: %v, want 'in use'", err)
	}
	if _, err := NewClient(filepath.Join(filepath.Dir(f.socket), "none.sock")).Status(); !errors.Is(err, ErrUnreachable) {
		t.Errorf("a client of no daemon: %v, want ErrUnreachable", err)
	}
}

func TestCreatingASandboxThroughTheAPI(t *testing.T) {
	allow := []string{"api.test"}
	on := true
	tests := []struct {
		name       string
		req        CreateRequest
		wantStatus int
		wantErr    string
		wantPolicy policy.Policy
	}{
		{"without a policy it gets the default", CreateRequest{Name: "a"}, 0, "", policy.Policy{DeniedHosts: []string{"*.evil.test"}}},
		{"a patch replaces the fields it gives and keeps the rest of the default", CreateRequest{Name: "b", Policy: &PolicyPatch{AllowedHosts: &allow}}, 0, "",
			policy.Policy{AllowedHosts: allow, DeniedHosts: []string{"*.evil.test"}}},
		{"internet on by patch", CreateRequest{Name: "c", Policy: &PolicyPatch{Internet: &on}}, 0, "", policy.Policy{Internet: true, DeniedHosts: []string{"*.evil.test"}}},
		{"an existing name is a 409", CreateRequest{Name: "a"}, 409, "already exists", policy.Policy{}},
		{"an invalid name is a 400", CreateRequest{Name: "../x"}, 400, "invalid sandbox name", policy.Policy{}},
		{"an invalid policy is a 400", CreateRequest{Name: "d", Policy: &PolicyPatch{AllowedHosts: &[]string{"bad host!"}}}, 400, "invalid policy", policy.Policy{}},
		{"an unknown quota field is a 400 naming the fields", CreateRequest{Name: "e", Quota: map[string]int64{"kv.files": 1}}, 400, "want one of kv.bytes", policy.Policy{}},
		{"a negative quota is a 400", CreateRequest{Name: "e", Quota: map[string]int64{"kv.bytes": -1}}, 400, "negative", policy.Policy{}},
		{"a chain without the namespace it is in is a 400", CreateRequest{Name: "f", Chain: &ChainRequest{HostInterface: "veth1",
			Address: netip.MustParsePrefix("10.22.0.5/24"), Gateway: netip.MustParseAddr("10.22.0.1")}}, 400, "chain needs netns_path", policy.Policy{}},
	}
	f := newAPI(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, err := f.c.CreateWith(tt.req)
			if got := statusOfErr(t, err); got != tt.wantStatus || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("create: %v (status %d), want status %d containing %q", err, got, tt.wantStatus, tt.wantErr)
			}
			if err != nil {
				if _, ok := f.sb.Get(tt.req.Name); ok && tt.wantStatus != 409 {
					t.Errorf("a refused create left a sandbox %q", tt.req.Name)
				}
				return
			}
			if sb.Name != tt.req.Name || fmt.Sprint(sb.Policy) != fmt.Sprint(tt.wantPolicy) {
				t.Errorf("created %q with %+v, want %q with %+v", sb.Name, sb.Policy, tt.req.Name, tt.wantPolicy)
			}
		})
	}
	t.Run("an unknown field in the body is a 400 naming it", func(t *testing.T) {
		resp, err := rawAdmin(f, "POST", "/v1/sandboxes", `{"name":"x","polcy":{}}`)
		if err != nil {
			t.Fatal(err)
		}
		if b := readBody(resp); resp.StatusCode != 400 || !strings.Contains(b, `unknown field \"polcy\"`) {
			t.Errorf("%d %s", resp.StatusCode, b)
		}
	})
	t.Run("attaching a runtime's namespace passes its path and interface", func(t *testing.T) {
		sb, err := f.c.Attach("runc1", "/run/netns/runc1", "eth0")
		if err != nil || !sb.External || sb.NetnsPath != "/run/netns/runc1" || sb.Interface != "eth0" {
			t.Errorf("attach = %+v, %v", sb, err)
		}
	})
	t.Run("quota overrides given at creation are the sandbox's", func(t *testing.T) {
		if _, err := f.c.CreateWith(CreateRequest{Name: "q", Quota: map[string]int64{"kv.bytes": 1000}}); err != nil {
			t.Fatal(err)
		}
		info, err := f.c.Show("q")
		if err != nil || info.Quota.KV.Bytes != 1000 {
			t.Errorf("show = %+v, %v; want kv bytes quota 1000", info.Quota, err)
		}
	})
}

func TestReadingChangingAndDeletingASandboxThroughTheAPI(t *testing.T) {
	f := newAPI(t)
	if _, err := f.c.Create("web1", nil); err != nil {
		t.Fatal(err)
	}
	on := true
	t.Run("a policy patch replaces only the fields it gives", func(t *testing.T) {
		p, err := f.c.SetPolicy("web1", PolicyPatch{Internet: &on})
		if err != nil || !p.Internet || !slices.Equal(p.DeniedHosts, []string{"*.evil.test"}) {
			t.Fatalf("patched policy %+v, %v", p, err)
		}
		if got, err := f.c.Policy("web1"); err != nil || !got.Internet {
			t.Errorf("policy read back %+v, %v", got, err)
		}
	})
	t.Run("an invalid policy patch is a 400 and changes nothing", func(t *testing.T) {
		_, err := f.c.SetPolicy("web1", PolicyPatch{DeniedHosts: &[]string{"bad host!"}})
		if statusOfErr(t, err) != 400 {
			t.Fatalf("patch: %v, want a 400", err)
		}
		if got, _ := f.sb.Get("web1"); !slices.Equal(got.Policy.DeniedHosts, []string{"*.evil.test"}) {
			t.Errorf("a refused patch changed the policy: %+v", got.Policy)
		}
	})
	t.Run("the wiring check answers for the manager", func(t *testing.T) {
		if err := f.c.Check("web1"); err != nil {
			t.Errorf("check: %v", err)
		}
		f.sb.SetCheckErr(errors.New("veth icd3 is gone"))
		defer f.sb.SetCheckErr(nil)
		if err := f.c.Check("web1"); statusOfErr(t, err) != 500 || !strings.Contains(err.Error(), "veth icd3 is gone") {
			t.Errorf("check of broken wiring: %v, want a 500 saying why", err)
		}
	})
	t.Run("a quota patch replaces the overrides", func(t *testing.T) {
		q, err := f.c.SetQuota("web1", map[string]int64{"blob.keys": 5})
		if err != nil || q.Blob.Keys != 5 {
			t.Errorf("quota %+v, %v", q, err)
		}
		if _, err := f.c.SetQuota("web1", map[string]int64{"blob.files": 5}); statusOfErr(t, err) != 400 {
			t.Errorf("an unknown quota field: %v, want a 400", err)
		}
	})
	t.Run("a sandbox that does not exist is a 404 everywhere", func(t *testing.T) {
		for what, err := range map[string]error{
			"get":    second(f.c.Get("none")),
			"policy": second(f.c.Policy("none")),
			"patch":  second(f.c.SetPolicy("none", PolicyPatch{Internet: &on})),
			"quota":  second(f.c.SetQuota("none", nil)),
			"check":  f.c.Check("none"),
			"delete": f.c.Delete("none"),
		} {
			if statusOfErr(t, err) != 404 {
				t.Errorf("%s: %v, want a 404", what, err)
			}
		}
	})
	t.Run("listing shows every sandbox", func(t *testing.T) {
		f.c.Create("web2", nil)
		l, err := f.c.List()
		if err != nil || len(l) != 2 || l[0].Name != "web1" || l[1].Name != "web2" {
			t.Errorf("list = %+v, %v", l, err)
		}
		if st, err := f.c.Status(); err != nil || st.Sandboxes != 2 || st.Version != "test" {
			t.Errorf("status = %+v, %v", st, err)
		}
	})
	t.Run("delete drops the sandbox and its quota overrides, and keeps its data", func(t *testing.T) {
		mustPutAs(t, f, "web1")
		if err := f.c.Delete("web1"); err != nil {
			t.Fatal(err)
		}
		if _, ok := f.sb.Get("web1"); ok {
			t.Error("the sandbox survived its delete")
		}
		if q, _ := f.st.Quota("web1"); q.Blob.Keys != 0 {
			t.Errorf("its quota overrides survived: %+v", q)
		}
		if u, _ := f.st.Usage("web1"); u.KV.Keys != 1 {
			t.Errorf("its data went without purge: %+v", u)
		}
	})
	t.Run("purge removes the data of a sandbox already gone", func(t *testing.T) {
		if err := f.c.DeleteSandbox("web1", true); err != nil {
			t.Fatal(err)
		}
		if u, _ := f.st.Usage("web1"); u.KV.Keys != 0 {
			t.Errorf("purge left data: %+v", u)
		}
	})
	t.Run("purge of an invalid name is a 400", func(t *testing.T) {
		if err := f.c.DeleteSandbox("a b", true); statusOfErr(t, err) != 400 {
			t.Errorf("purge: %v, want a 400", err)
		}
	})
}

// mustPutAs stores one key charged to sandbox in its per-sandbox space.
func mustPutAs(t *testing.T, f *apiFixture, sandbox string) {
	t.Helper()
	kv := f.st.Keys(store.KindKV, "default", store.SandboxScope(sandbox), store.Limits{})
	if err := kv.Put("k", store.Entry{Value: []byte("v"), Owner: sandbox}); err != nil {
		t.Fatal(err)
	}
}

func second[T any](_ T, err error) error { return err }

func TestAnOperatorUsesAHandlerAsASandboxWould(t *testing.T) {
	f := newAPI(t)
	tests := []struct {
		name        string
		host        string
		key         string
		sandbox     string
		wantStatus  int
		wantBody    string
		wantSandbox string
	}{
		{"a shared handler without a sandbox", "my.kv", "a/b c", "", 200, "GET /a/b c", ""},
		{"the Host is matched as the router does", "MY.KV", "k", "", 200, "GET /k", ""},
		{"a per-sandbox handler acts as the sandbox named", "state.do", "k", "web1", 200, "GET /k", "web1"},
		{"a per-sandbox handler without a sandbox is a 400", "state.do", "k", "", 400, "pass ?sandbox=NAME", ""},
		{"an invalid sandbox name is a 400", "state.do", "k", "a b", 400, "invalid sandbox name", ""},
		{"an unknown host is a 404", "none.test", "k", "", 404, "no handler for host", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.seen.Store(nil)
			resp, err := f.c.Handler("GET", tt.host, tt.key, tt.sandbox, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			b := readBody(resp)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(b, tt.wantBody) {
				t.Fatalf("%d %q, want %d containing %q", resp.StatusCode, b, tt.wantStatus, tt.wantBody)
			}
			if tt.wantStatus != 200 {
				if seen := f.seen.Load(); seen != nil {
					t.Errorf("a refused call reached the handler: %+v", *seen)
				}
				return
			}
			if seen := f.seen.Load(); seen == nil || !seen.Operator || seen.Sandbox != tt.wantSandbox {
				t.Errorf("the handler got %+v, want an operator acting as %q", seen, tt.wantSandbox)
			}
		})
	}
	t.Run("a namespace is reached directly, as an operator", func(t *testing.T) {
		f.seen.Store(nil)
		resp, err := f.c.Namespace("PUT", "secrets", "web1/token", nil, strings.NewReader("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		seen := f.seen.Load()
		if b := readBody(resp); resp.StatusCode != 200 || b != "PUT /web1/token" || seen == nil || !seen.Operator {
			t.Errorf("%d %q, env %+v", resp.StatusCode, b, seen)
		}
	})
	t.Run("the handlers are listed without their internals", func(t *testing.T) {
		hs, err := f.c.Handlers()
		if err != nil || len(hs) != 2 || hs[1].Host != "state.do" || !hs[1].PerSandbox {
			t.Errorf("handlers = %+v, %v", hs, err)
		}
	})
}

func TestStoreStatsRunTheConsistencyCheckWhenAsked(t *testing.T) {
	f := newAPI(t)
	if _, err := f.c.StoreStats(true); err != nil {
		t.Fatalf("stats with a passing check: %v", err)
	}
	broken := errors.New("page 7: unreachable")
	f.st.checkErr.Store(&broken)
	if _, err := f.c.StoreStats(false); err != nil {
		t.Errorf("stats without a check ran it: %v", err)
	}
	if _, err := f.c.StoreStats(true); statusOfErr(t, err) != 500 || !strings.Contains(err.Error(), "page 7: unreachable") {
		t.Errorf("stats with a failing check: %v, want a 500 saying why", err)
	}
}

func TestAdminRequestsAreCountedByRoutePatternNotPath(t *testing.T) {
	f := newAPI(t)
	f.c.Get("x1")
	f.c.Get("x2")
	rawAdmin(f, "GET", "/nowhere/at/all", "")
	if got := testutil.ToFloat64(mustCounter(t, f.reg, "GET /v1/sandboxes/{name}", "404")); got != 2 {
		t.Errorf("GET /v1/sandboxes/{name} 404 counted %v, want 2", got)
	}
	if got := testutil.ToFloat64(mustCounter(t, f.reg, "_unmatched", "404")); got != 1 {
		t.Errorf("unmatched 404 counted %v, want 1", got)
	}
}

// mustCounter finds interceptd_admin_requests_total{route, code}.
func mustCounter(t *testing.T, reg *prometheus.Registry, route, code string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "interceptd_admin_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["code"] == code {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "copy"})
				c.Add(m.GetCounter().GetValue())
				return c
			}
		}
	}
	t.Fatalf("no interceptd_admin_requests_total{route=%q,code=%q}", route, code)
	return nil
}

func rawAdmin(f *apiFixture, method, path, body string) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://interceptd"+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	return f.c.hc.Do(req)
}

func readBody(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestTheCACertificateIsReadOnlyAndAbsentWithoutInterception(t *testing.T) {
	f := newAPI(t) // a daemon with no CA
	if pem, err := f.c.CACert(); err != nil || pem != nil {
		t.Errorf("CA of a daemon without one: %q, %v; want nil, nil", pem, err)
	}
	resp, err := rawAdmin(f, "GET", "/v1/ca", "")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(b), "listen.https") {
		t.Errorf("GET /v1/ca without a CA: %d %s, want 404 saying why", resp.StatusCode, b)
	}

	const cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	socket := filepath.Join(t.TempDir(), "admin.sock")
	srv, err := Listen(socket, Backend{CACert: []byte(cert)}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	c := NewClient(socket)
	if pem, err := c.CACert(); err != nil || string(pem) != cert {
		t.Errorf("CA: %q, %v; want %q", pem, err, cert)
	}
	for _, m := range []string{"PUT", "POST", "DELETE"} {
		req, _ := http.NewRequest(m, "http://interceptd/v1/ca", strings.NewReader(cert))
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s /v1/ca: %d, want 405", m, resp.StatusCode)
		}
	}
}

func TestTheAdminSocketIsRootsOnlyUnlessAGroupIsNamed(t *testing.T) {
	tests := []struct {
		name, group string
		mode        os.FileMode
		gid         uint32
		wantErr     string
	}{
		{"no group: the owner only", "", 0o600, 0, ""},
		{"a group by name: its members too", "daemon", 0o660, 1, ""},
		{"a group by number", "1", 0o660, 1, ""},
		{"a group that does not exist is refused, naming it", "no-such-group-icd", 0, 0, `admin_socket_group "no-such-group-icd": no such group`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "admin.sock")
			srv, err := Listen(sock, Backend{SocketGroup: tt.group}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Listen: %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Shutdown(context.Background())
			fi, err := os.Stat(sock)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tt.mode || fi.Sys().(*syscall.Stat_t).Gid != tt.gid {
				t.Errorf("socket mode %v gid %d, want %v gid %d", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, tt.mode, tt.gid)
			}
		})
	}
}

func TestASandboxIsShownWhileTheEngineOfItsKVAndStateIsDownWithThoseFiguresMarkedUnavailable(t *testing.T) {
	cases := []struct {
		name       string
		engines    map[string]string
		remoteErr  error
		wantStatus int    // 0: shown
		wantKinds  string // the kinds marked unavailable, "" for none
	}{
		{"etcd answering: every figure, nothing marked", map[string]string{"kv": "etcd", "state": "etcd"}, nil, 0, ""},
		{"etcd down: shown, kv and state marked unavailable with the reason", map[string]string{"kv": "etcd", "state": "etcd"},
			fmt.Errorf("kv and state usage from etcd: %w: etcd did not answer in time", store.ErrUnavailable), 0, "kv,state"},
		{"a failure that is not an outage still fails the request", map[string]string{"kv": "etcd", "state": "etcd"},
			errors.New("the usage record is corrupt"), http.StatusInternalServerError, ""},
		{"bbolt alone failing is not hidden as an outage", nil,
			fmt.Errorf("%w: what", store.ErrUnavailable), http.StatusInternalServerError, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newAPI(t, func(b *Backend) { b.Engines = c.engines })
			if _, err := f.c.CreateWith(CreateRequest{Name: "web1", Quota: map[string]int64{"blob.keys": 7}}); err != nil {
				t.Fatal(err)
			}
			if c.remoteErr != nil {
				f.st.remoteErr.Store(&c.remoteErr)
			}
			info, err := f.c.Show("web1")
			if c.wantStatus != 0 {
				var ae *APIError
				if !errors.As(err, &ae) || ae.Status != c.wantStatus {
					t.Fatalf("got %v, want status %d", err, c.wantStatus)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Name != "web1" || !info.Addr.IsValid() || info.Quota.Blob.Keys != 7 {
				t.Errorf("the sandbox's own facts are missing: %+v", info)
			}
			got := ""
			if info.Unavailable != nil {
				got = strings.Join(info.Unavailable.Kinds, ",")
				if info.Unavailable.Engine != "etcd" || !strings.Contains(info.Unavailable.Reason, "did not answer in time") {
					t.Errorf("unavailable = %+v, want etcd with the reason", info.Unavailable)
				}
			}
			if got != c.wantKinds {
				t.Errorf("kinds marked unavailable: %q, want %q", got, c.wantKinds)
			}
		})
	}
}
