package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/internal/kinds"
	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/prometheus/client_golang/prometheus"
)

func TestTheManagerIsConfiguredFromTheConfig(t *testing.T) {
	cfg := config.Default()
	nc, err := NetnsParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if nc.Pool.String() != "10.213.0.0/16" || nc.NetnsPrefix != "icd-" || nc.InterfacePrefix != "icd" || nc.ResolvConfDir != ResolvConfDir {
		t.Errorf("manager config %+v", nc)
	}
	r := nc.Rules
	if r.HTTPListenIP != "127.0.0.1" || r.HTTPListenPort != 15380 || r.DNSPort != 15353 || r.DNSQPS != 2000 || r.InterfacePrefix != "icd" {
		t.Errorf("rule params %+v", r)
	}
	// What routed traffic may never reach: the pool (other sandboxes), the
	// handlers' virtual addresses, the host, link-local (cloud metadata).
	for _, p := range []string{"10.213.0.0/16", "198.18.213.0/24", "127.0.0.0/8", "169.254.0.0/16"} {
		if !slices.Contains(r.Protected, p) {
			t.Errorf("%s is not protected: %v", p, r.Protected)
		}
	}
	for _, p := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"} {
		if !slices.Contains(r.Private, p) {
			t.Errorf("%s is not private: %v", p, r.Private)
		}
	}
	for _, p := range r.Private {
		if strings.Contains(p, ":") {
			t.Errorf("an IPv6 prefix in the IPv4 rules: %s", p)
		}
	}
	off := false
	cfg.Sandbox.ResolvConf = &off
	if nc, _ := NetnsParams(cfg); nc.ResolvConfDir != "" {
		t.Error("resolv_conf: false still writes resolv.conf files")
	}
	for field, mutate := range map[string]func(*config.Config){
		"sandbox.pool": func(c *config.Config) { c.Sandbox.Pool = "nope" },
		"listen.http":  func(c *config.Config) { c.Listen.HTTP = "nope" },
	} {
		c := config.Default()
		mutate(c)
		if _, err := NetnsParams(c); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("a bad %s: %v, want an error naming it", field, err)
		}
	}
}

// The kernel rules a config gives the manager protect exactly what the
// router and the DNS shim refuse as protected destinations: one
// definition, so routed traffic and forwarded HTTP cannot disagree (they
// once did on 0.x.y.z).
func TestTheKernelRulesAndTheRouterProtectTheSameDestinations(t *testing.T) {
	cfg := config.Default()
	nc, err := NetnsParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dests, err := Destinations(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fwd := &handlers.Forward{Destinations: dests}
	var kernel []netip.Prefix
	for _, s := range nc.Rules.Protected {
		kernel = append(kernel, netip.MustParsePrefix(s))
	}
	for _, addr := range []string{
		"0.0.0.0", "0.1.2.3", "127.0.0.1", "127.9.9.9", "169.254.169.254", "224.0.0.251", "255.255.255.255",
		"10.213.0.1", "10.213.255.254", "198.18.213.1", "::ffff:169.254.169.254",
		"192.0.2.10", "1.1.1.1", "10.214.0.1", "198.18.214.1",
	} {
		a := netip.MustParseAddr(addr)
		inKernel := slices.ContainsFunc(kernel, func(p netip.Prefix) bool { return p.Contains(a.Unmap()) })
		if why := fwd.Protected(a); inKernel != (why != "") {
			t.Errorf("%s: in the kernel's protected list %v, the router says %q", addr, inKernel, why)
		}
	}
	c := config.Default()
	c.DNS.VirtualCIDR = "nope"
	if _, err := NetnsParams(c); err == nil || !strings.Contains(err.Error(), "dns.virtual_cidr") {
		t.Errorf("a bad dns.virtual_cidr: %v, want an error naming it", err)
	}
}

func TestHandlersGetVirtualAddressesInConfigOrder(t *testing.T) {
	cfg := config.Default()
	cfg.Handlers = []config.Handler{{Host: "My.KV"}, {Host: "*"}, {Host: "my.r2."}, {Host: "state.do"}}
	got := VirtualAddrs(cfg)
	want := map[string]netip.Addr{
		"my.kv":    netip.MustParseAddr("198.18.213.1"),
		"my.r2":    netip.MustParseAddr("198.18.213.2"),
		"state.do": netip.MustParseAddr("198.18.213.3"),
	}
	if len(got) != len(want) {
		t.Fatalf("virtual addresses %v, want %v (the catch-all has none)", got, want)
	}
	for h, a := range want {
		if got[h] != a {
			t.Errorf("%s at %s, want %s", h, got[h], a)
		}
	}
}

func TestQuotasComeFromTheConfig(t *testing.T) {
	cfg := config.Default()
	cfg.Quota.KV = config.QuotaLimit{Bytes: 10, Keys: 1}
	cfg.Quota.State = config.QuotaLimit{Bytes: 20, Keys: 2}
	cfg.Quota.Blob = config.QuotaLimit{Bytes: 30, Keys: 3}
	want := store.Amounts{KV: store.Amount{Bytes: 10, Keys: 1}, State: store.Amount{Bytes: 20, Keys: 2}, Blob: store.Amount{Bytes: 30, Keys: 3}}
	if got := Quotas(cfg); got != want {
		t.Errorf("Quotas = %+v, want %+v", got, want)
	}
}

func testBuilder(t *testing.T) *builder {
	t.Helper()
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &builder{stores: backend.Bolt(db), cfg: config.Default(), log: slog.New(slog.DiscardHandler)}
}

func TestEachHandlerKindIsBuiltAsConfigured(t *testing.T) {
	b := testBuilder(t)
	b.cfg.Deny.Status = 451
	tests := []struct {
		h     config.Handler
		check func(router.Handler) bool
	}{
		{config.Handler{Host: "my.kv", Kind: "kv", Spec: &kinds.KV{Namespace: "ns", Scope: "sandbox"}}, func(h router.Handler) bool {
			kv, ok := h.(*handlers.KV)
			return ok && kv.Kind == store.KindKV && kv.Namespace == "ns" && kv.PerSandbox && !kv.Transactions
		}},
		{config.Handler{Host: "state.do", Kind: "state"}, func(h router.Handler) bool {
			kv, ok := h.(*handlers.KV)
			return ok && kv.Kind == store.KindState && kv.PerSandbox && kv.Transactions
		}},
		{config.Handler{Host: "my.r2", Kind: "blob", Spec: &kinds.Blob{Bucket: "b", Limits: kinds.Limits{MaxObjectBytes: 99}}}, func(h router.Handler) bool {
			bl, ok := h.(*handlers.Blob)
			return ok && bl.Bucket == "b" && !bl.PerSandbox && bl.Limits.MaxObjectBytes == 99 && bl.Limits.MaxKeyBytes == 512
		}},
		{config.Handler{Host: "x.test", Kind: "respond", Spec: &kinds.Respond{Status: 204, Body: "b"}}, func(h router.Handler) bool {
			r, ok := h.(*handlers.Respond)
			return ok && r.Status == 204 && r.Body == "b"
		}},
		{config.Handler{Host: "no.test", Kind: "deny"}, func(h router.Handler) bool {
			d, ok := h.(*handlers.Deny)
			return ok && d.Status == 451
		}},
		{config.Handler{Host: "api.test", Kind: "proxy", Spec: &kinds.Proxy{Upstream: "http://192.0.2.2/v1"}}, func(h router.Handler) bool {
			p, ok := h.(*handlers.Proxy)
			return ok && p.Upstream.String() == "http://192.0.2.2/v1" && p.Name == "api.test" && p.TLS == nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.h.Kind, func(t *testing.T) {
			h, err := b.build(tt.h)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(h) {
				t.Errorf("built %#v", h)
			}
		})
	}
	if _, err := b.build(config.Handler{Host: "x.test", Kind: "lambda"}); err == nil || !strings.Contains(err.Error(), `unknown kind "lambda"`) {
		t.Errorf("an unknown kind: %v", err)
	}
}

func TestAProxysSecretsAndCAAreLoadedOrTheConfigIsRefused(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds")
	os.Mkdir(creds, 0o700)
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	write := func(path, content string) string {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write(filepath.Join(creds, "gh-token0"), "from-systemd\n")
	secretFile := write(filepath.Join(dir, "secret"), "from-file\n")
	caFile := write(filepath.Join(dir, "ca.pem"), string(testCAPEM(t)))
	notPEM := write(filepath.Join(dir, "not.pem"), "hello")

	proxy := func(in []kinds.Inject, ca string) config.Handler {
		return config.Handler{Host: "api.test", Kind: "proxy", Spec: &kinds.Proxy{Upstream: "https://api.test/", Inject: in, CAFile: ca}}
	}
	tests := []struct {
		name    string
		h       config.Handler
		wantErr string
	}{
		{"a systemd credential", proxy([]kinds.Inject{{Header: "Authorization", Credential: "gh-token0"}}, ""), ""},
		{"a secret file", proxy([]kinds.Inject{{Header: "Authorization", File: secretFile}}, ""), ""},
		{"a per-sandbox KV secret", proxy([]kinds.Inject{{Header: "Authorization", KVNamespace: "secrets"}}, ""), ""},
		{"a CA bundle", proxy(nil, caFile), ""},
		{"a credential that is not there", proxy([]kinds.Inject{{Header: "X", Credential: "absent"}}, ""), "inject[0]: reading secret"},
		{"a credential that is a path", proxy([]kinds.Inject{{Header: "X", Credential: "../secret"}}, ""), "not a file name"},
		{"a secret file that is not there", proxy([]kinds.Inject{{Header: "X", File: filepath.Join(dir, "absent")}}, ""), "inject[0]: reading secret"},
		{"a CA file that is not there", proxy(nil, filepath.Join(dir, "absent.pem")), "ca_file"},
		{"a CA file without a certificate", proxy(nil, notPEM), "holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := testBuilder(t).build(tt.h)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "handler api.test") {
					t.Fatalf("got %v, want an error naming the handler and %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := h.(*handlers.Proxy)
			if tt.h.Spec.(*kinds.Proxy).CAFile != "" && (p.TLS == nil || p.TLS.RootCAs == nil) {
				t.Error("the CA bundle is not what the proxy verifies with")
			}
		})
	}
	t.Run("the credential's value is what the proxy injects", func(t *testing.T) {
		var got string
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Get("Authorization") }))
		defer up.Close()
		b := testBuilder(t)
		h, err := b.build(config.Handler{Host: "api.test", Kind: "proxy", Spec: &kinds.Proxy{Upstream: up.URL,
			Inject: []kinds.Inject{{Header: "Authorization", Template: "Bearer {secret}", Credential: "gh-token0"}}}})
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, httptest.NewRequest("GET", "http://api.test/", nil), router.Env{Sandbox: "web1"}); err != nil {
			t.Fatal(err)
		}
		if got != "Bearer from-systemd" {
			t.Errorf("the upstream got Authorization %q, want the systemd credential", got)
		}
	})
}

func TestReloadRereadsSecretsAndKeepsTheOldValueOfOneThatFails(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	path := filepath.Join(dir, "tok")
	os.WriteFile(path, []byte("v1"), 0o600)
	b := testBuilder(t)
	if _, err := b.build(config.Handler{Host: "api.test", Kind: "proxy", Spec: &kinds.Proxy{Upstream: "http://192.0.2.2/",
		Inject: []kinds.Inject{{Header: "X", Credential: "tok"}}}}); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{builder: b, log: slog.New(slog.DiscardHandler)}
	value := func() string { v, _ := b.files[0].Value(router.Env{}); return string(v) }

	os.WriteFile(path, []byte("v2"), 0o600)
	if err := d.Reload(); err != nil || value() != "v2" {
		t.Errorf("after reload: %q, %v; want v2", value(), err)
	}
	os.Remove(path)
	if err := d.Reload(); err == nil || value() != "v2" {
		t.Errorf("a reload that fails: %q, %v; want an error and v2 kept", value(), err)
	}
}

// testCAPEM is a CA certificate of its own, in PEM.
func testCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestStatusReportsTheNumbersItsComponentsKeep(t *testing.T) {
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	kv := db.Keys(store.KindKV, "default", store.SandboxScope("web1"), store.Limits{})
	if err := kv.Put("k", store.Entry{Value: []byte("12345"), Owner: "web1"}); err != nil {
		t.Fatal(err)
	}
	decisions := policy.NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))
	decisions.Observe("http", "a", policy.Decision{Result: policy.Deny, Reason: "denied_host"})
	decisions.Observe("dns", "b", policy.Decision{Result: policy.Deny, Reason: "not_allowed"})
	decisions.Observe("http", "a", policy.Decision{Result: policy.Forward, Reason: "internet_on"})
	cfg := config.Default()
	cfg.Store.MinFreeBytes = 1 << 20
	d := &Daemon{cfg: cfg, db: db, started: time.Now().Add(-time.Minute), counts: counts{
		sandboxes:  func() int { return 3 },
		requests:   func() int64 { return 7 },
		dnsQueries: func() int64 { return 7 },
		denials:    decisions.Denials,
	}}

	st := d.Status()
	if st.Sandboxes != 3 || st.Requests != 7 || st.DNSQueries != 7 || st.Denials != 2 {
		t.Errorf("status %+v, want 3 sandboxes, 7 requests, 7 queries, 2 denials (not the forward)", st)
	}
	size, err := db.FileSize()
	if err != nil || size <= 0 {
		t.Fatalf("store file size %d: %v", size, err)
	}
	if st.UptimeSeconds < 59 || st.StoreUsage.KV.Keys != 1 || st.StoreMinFreeBytes != 1<<20 || st.StoreFreeBytes <= 0 || st.StoreBytes != size {
		t.Errorf("status %+v", st)
	}
}

func TestHealthyNeedsTheStoreAndTheAdminSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "icd-health-") // a socket path must fit in 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := store.Open(filepath.Join(dir, "data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.AdminSocket = filepath.Join(dir, "admin.sock")
	d := &Daemon{cfg: cfg, db: db}
	if err := d.Healthy(); err == nil || !strings.Contains(err.Error(), "admin socket") {
		t.Errorf("without the socket: %v, want an admin socket error", err)
	}
	ln, err := net.Listen("unix", cfg.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := d.Healthy(); err != nil {
		t.Errorf("with both: %v", err)
	}
	db.Close()
	if err := d.Healthy(); err == nil || !strings.Contains(err.Error(), "store") {
		t.Errorf("with the store closed: %v, want a store error", err)
	}
}
