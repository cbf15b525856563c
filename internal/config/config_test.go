package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/kinds"
	"github.com/interceptd/interceptd/policy"
)

func TestEmbeddedDefaultServesMyKVMyR2AndStateDO(t *testing.T) {
	c := Default()
	want := []struct {
		host, kind, space string
		perSandbox        bool
	}{{"my.kv", "kv", "default", false}, {"my.r2", "blob", "default", false}, {"state.do", "state", "default", true}}
	if len(c.Handlers) != len(want) {
		t.Fatalf("default handlers = %+v", c.Handlers)
	}
	for i, w := range want {
		h := c.Handlers[i]
		if h.Host != w.host || h.Kind != w.kind || h.Space() != w.space || h.PerSandbox() != w.perSandbox {
			t.Errorf("handler %d = %+v, want %+v", i, h, w)
		}
	}
	if !c.Sandbox.WriteResolvConf() {
		t.Error("default should write resolv.conf for ip netns exec users")
	}
	if c.DNS.MaxTCPConnectionsPerSandbox != 128 {
		t.Errorf("default dns.max_tcp_connections_per_sandbox = %d, want 128 (a sandbox's idle TCP connections are capped)", c.DNS.MaxTCPConnectionsPerSandbox)
	}
}

func TestGoodFixturesLoad(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	if len(files) == 0 {
		t.Fatal("no good fixtures")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAFileOnlySaysWhatItChanges(t *testing.T) {
	c, err := Load("testdata/good/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.Listen != d.Listen || c.Sandbox.Pool != d.Sandbox.Pool || len(c.Handlers) != 3 {
		t.Errorf("minimal config did not keep defaults: %+v", c)
	}
	if d.Listen.UpgradeIdleTimeout != 10*time.Minute {
		t.Errorf("default upgrade_idle_timeout %v, want the 10m docs/handlers.md promises", d.Listen.UpgradeIdleTimeout)
	}
}

func TestFullFixtureDecodesEveryField(t *testing.T) {
	c, err := Load("testdata/good/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.DNS.Timeout != 750*time.Millisecond || c.DNS.TTL != 5 || len(c.DNS.Upstreams) != 2 || c.DNS.MaxTCPConnectionsPerSandbox != 16 {
		t.Errorf("dns = %+v", c.DNS)
	}
	if c.Sandbox.WriteResolvConf() || c.Sandbox.InterfacePrefix != "cx" || c.Listen.DNSPort != 18053 || c.Listen.UpgradeIdleTimeout != 90*time.Second {
		t.Errorf("sandbox/listen = %+v %+v", c.Sandbox, c.Listen)
	}
	blob, _ := c.Handlers[2].Spec.(*kinds.Blob)
	if len(c.Handlers) != 4 || policy.NormalizeHost(c.Handlers[0].Host) != "my.kv" || !c.Handlers[2].PerSandbox() || blob == nil || blob.Limits.MaxObjectBytes != 1<<30 {
		t.Errorf("handlers = %+v", c.Handlers)
	}
	d := Default()
	want := Quota{KV: QuotaLimit{64 << 10, 10}, State: QuotaLimit{d.Quota.State.Bytes, 5}, Blob: QuotaLimit{2 << 20, d.Quota.Blob.Keys}}
	if c.Quota != want || c.Store.MinFreeBytes != 1e9 {
		t.Errorf("quota %+v store %+v, want %+v (fields left out keep the defaults)", c.Quota, c.Store, want)
	}
}

func TestS3BlobsFixtureDecodesEveryS3Field(t *testing.T) {
	c, err := Load("testdata/good/s3-blobs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := StoreBlobs{Backend: BlobsS3, S3: S3{Endpoint: "127.0.0.1:8333", Bucket: "interceptd-blobs", Region: "us-east-1",
		Prefix: "fleet-a/", PathStyle: true, AccessKeyFile: "/etc/interceptd/s3-access-key", SecretKeyCredential: "s3-secret-key",
		Insecure: true, RequestTimeout: 5 * time.Second}}
	if !reflect.DeepEqual(c.Store.Blobs, want) {
		t.Errorf("store.blobs = %+v, want %+v (path_style keeps its default)", c.Store.Blobs, want)
	}
	if d := Default().Store.Blobs; d.Backend != BlobsBolt || !d.S3.PathStyle || d.S3.RequestTimeout <= 0 {
		t.Errorf("default store.blobs = %+v, want bbolt with path-style S3 and a request timeout", d)
	}
}

func TestSizesTakeBinaryAndDecimalUnits(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"0", 0, true}, {"4096", 4096, true}, {"64KiB", 64 << 10, true}, {"10MiB", 10 << 20, true},
		{"1GiB", 1 << 30, true}, {"2TiB", 2 << 40, true}, {"5MB", 5e6, true}, {"3 GB", 3e9, true}, {"7B", 7, true},
		{"-1", 0, false}, {"ten", 0, false}, {"1.5GiB", 0, false}, {"10 megs", 0, false}, {"99999999999TiB", 0, false}, {"", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestBrokenFixturesNameTheFieldAndLine(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"unknown-field.yaml", []string{"line 4", "dns_prot", "unknown field (not found in listen)"}},
		{"unknown-top-level.yaml", []string{"line 4", "field listen_https: unknown field (not found in the top level)"}},
		{"duration-without-unit.yaml", []string{"line 3", "field dns.timeout: 2 is not a duration (write it with a unit: 2s"}},
		{"mistyped-field.yaml", []string{"line 3", "field dns.timeout", "soon"}},
		{"mistyped-port.yaml", []string{"line 3", "field listen.dns_port", "is not a whole number"}},
		{"missing-version.yaml", []string{"field version", "missing"}},
		{"future-version.yaml", []string{"field version", "2 is not supported"}},
		{"unknown-kind.yaml", []string{"field handlers[0].kind", `"kvv"`}},
		{"duplicate-host.yaml", []string{"field handlers[1].host", "twice"}},
		{"pool-overlaps-virtual.yaml", []string{"field sandbox.pool", "overlaps"}},
		{"http-not-loopback.yaml", []string{"field listen.http", "loopback"}},
		{"https-other-address.yaml", []string{"field listen.https", "listen.http's address"}},
		{"https-same-port.yaml", []string{"field listen.https", "listen.http's port"}},
		{"https-handler-without-listener.yaml", []string{"field handlers[0].https", "needs listen.https"}},
		{"tls-cert-without-key.yaml", []string{"field tls", "go together"}},
		{"https-misspelt.yaml", []string{"line 3", "htps", "not found"}},
		{"worker-https-without-listener.yaml", []string{"field workers[0].https", "needs listen.https"}},
		{"handler-unknown-field.yaml", []string{"line 6", "secret"}},
		{"duplicate-key.yaml", []string{"line 3", "data_dir", "already defined"}},
		{"state-shared.yaml", []string{"field handlers[0].scope", "always per sandbox"}},
		{"blob-with-namespace.yaml", []string{"field handlers[0].namespace", "bucket"}},
		{"bad-scope.yaml", []string{"field handlers[0].scope", `"everyone"`}},
		{"mistyped-limit.yaml", []string{"line 6", "field handlers[0].limits.max_key_bytes"}},
		{"bad-quota-size.yaml", []string{"line 4", "field quota.blob.bytes", `"10 megs" is not a size`}},
		{"quota-unknown-kind.yaml", []string{"line 3", "disk", "not found"}},
		{"bad-min-free.yaml", []string{"line 3", "field store.min_free_bytes", `"-5" is not a size`}},
		{"negative-dns-tcp-cap.yaml", []string{"field dns.max_tcp_connections_per_sandbox", "negative"}},
		{"negative-upgrade-idle-timeout.yaml", []string{"field listen.upgrade_idle_timeout", "negative"}},
		{"worker-unknown-field.yaml", []string{"line 5", "timeout", "not found in a worker"}},
		{"worker-mistyped-limit.yaml", []string{"line 6", "field workers[0].limits.cpu_ms", "fast"}},
		{"worker-zero-limit.yaml", []string{"line 5", "field workers[0].limits.wall_ms", "positive"}},
		{"worker-duplicate.yaml", []string{"line 5", "field workers[1].name", "twice"}},
		{"worker-no-script.yaml", []string{"line 3", "field workers[0].script", "missing"}},
		{"binding-two-kinds.yaml", []string{"line 6", "field workers[0].bindings.KV", "exactly one of"}},
		{"binding-no-kind.yaml", []string{"line 6", "field workers[0].bindings.KV", "exactly one of"}},
		{"binding-unknown-kind.yaml", []string{"line 6", "d1", "not found in a binding"}},
		{"binding-not-identifier.yaml", []string{"line 6", "field workers[0].bindings.my-kv", "JavaScript identifier"}},
		{"binding-scalar.yaml", []string{"line 6", "field workers[0].bindings.MODE", "{kv: NS}"}},
		{"default-worker-unknown.yaml", []string{"line 5", "field default_worker", `"ap" is not a configured worker`}},
		{"store-unknown-backend.yaml", []string{"line 3", "field store.backend", `"etc" is not a store backend`}},
		{"etcd-no-endpoints.yaml", []string{"line 2", "field store.etcd.endpoints", "at least one endpoint"}},
		{"etcd-endpoint-not-url.yaml", []string{"line 7", "field store.etcd.endpoints[1]", "not an etcd client URL"}},
		{"etcd-zero-request-timeout.yaml", []string{"line 7", "field store.etcd.request_timeout", "positive"}},
		{"etcd-user-without-password.yaml", []string{"line 4", "field store.etcd.username", "password_file"}},
		{"etcd-tls-over-http.yaml", []string{"line 6", "field store.etcd.endpoints[0]", "use https://"}},
		{"etcd-prefix-without-slash.yaml", []string{"line 7", "field store.etcd.prefix", "end with /"}},
		{"etcd-unknown-field.yaml", []string{"line 7", "dial_timout", "not found in store.etcd"}},
		{"blobs-unknown-backend.yaml", []string{"line 4", "field store.blobs.backend", `"minio" is not a blob backend`}},
		{"s3-bad-bucket.yaml", []string{"line 7", "field store.blobs.s3.bucket", `"b" is not an S3 bucket name`}},
		{"s3-no-access-key.yaml", []string{"field store.blobs.s3.access_key_file", "missing", "never go in the config"}},
		{"s3-plain-http.yaml", []string{"line 6", "field store.blobs.s3.endpoint", "insecure: true"}},
		{"s3-zero-timeout.yaml", []string{"line 11", "field store.blobs.s3.request_timeout", "positive"}},
		{"s3-prefix-without-slash.yaml", []string{"line 8", "field store.blobs.s3.prefix", "must end with /"}},
		{"s3-inline-key.yaml", []string{"line 8", "access_key", "not found"}},
		{"inbound-bad-port.yaml", []string{"line 6", "field policy.inbound[1]", `"10.96.0.0/12:http"`, `port "http" is not 1-65535`}},
		{"inbound-bad-cidr.yaml", []string{"line 4", "field policy.inbound[0]", "not an IPv4 address or CIDR"}},
		{"inbound-bad-proto.yaml", []string{"line 8", "field policy.inbound[1]", `protocol "sctp": want tcp or udp`}},
	}
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) != len(tests) {
		t.Errorf("%d bad fixtures but %d cases: every fixture needs a case", len(files), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata/bad", tt.file))
			if err == nil {
				t.Fatal("loaded without error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), tt.file) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestEmptyDocumentIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "empty.yaml")
	os.WriteFile(p, nil, 0o644)
	if _, err := Load(p); err == nil {
		t.Fatal("empty config loaded")
	}
}

func TestWorkersDecodeWithTheirBindingsAndLimits(t *testing.T) {
	c, err := Load("testdata/good/workers.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Workers) != 2 || c.DefaultWorker != "app" {
		t.Fatalf("workers = %+v, default %q", c.Workers, c.DefaultWorker)
	}
	app, logger := c.Workers[0], c.Workers[1]
	if app.Name != "app" || app.Script != "workers/app.js" || app.Path != filepath.Join("testdata", "good", "workers", "app.js") {
		t.Errorf("app = %q %q %q; want its script relative to the config file", app.Name, app.Script, app.Path)
	}
	if logger.Path != "/etc/interceptd/workers/log.ts" {
		t.Errorf("an absolute script path became %q", logger.Path)
	}
	want := map[string][2]string{
		"KV": {"kv", "default"}, "BUCKET": {"blob", "default"}, "MY_CONTAINER": {"durable_object", "MyContainer"},
		"GITHUB_TOKEN": {"secret", "github_token"}, "DEPLOY_KEY": {"secret", "/etc/interceptd/deploy.key"},
		"MODE": {"var", "production"}, "EMPTY": {"var", ""},
	}
	if len(app.Bindings) != len(want) {
		t.Errorf("bindings = %+v", app.Bindings)
	}
	for name, w := range want {
		if b := app.Bindings[name]; b.Kind() != w[0] || b.Value() != w[1] {
			t.Errorf("binding %s = %s %q, want %s %q", name, b.Kind(), b.Value(), w[0], w[1])
		}
	}
	if app.Limits != (WorkerLimits{CPUMs: 20, WallMs: 30000, Subrequests: 5}) {
		t.Errorf("app limits = %+v, want the ones set and the default wall_ms", app.Limits)
	}
	if logger.Limits != DefaultWorkerLimits() || logger.Limits.CPU() != 50*time.Millisecond || logger.Limits.Wall() != 30*time.Second || logger.Limits.MaxSubrequests() != 50 {
		t.Errorf("logger limits = %+v, want the defaults", logger.Limits)
	}
	if w, ok := c.Worker("logger"); !ok || w.Name != "logger" {
		t.Errorf("Worker(logger) = %+v, %v", w, ok)
	}
	if _, ok := c.Worker("nope"); ok {
		t.Error("Worker(nope) found")
	}
	if d := Default(); len(d.Workers) != 0 || d.DefaultWorker != "" {
		t.Errorf("the default config has workers %+v, default %q", d.Workers, d.DefaultWorker)
	}
}

func TestAWorkerBuiltInCodeTakesTheDefaultLimits(t *testing.T) {
	c := Default()
	c.Workers = []Worker{{Name: "app", Script: "/x.js"}}
	c.DefaultWorker = "app"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if l := c.Workers[0].Limits; l.CPU() != 50*time.Millisecond || l.MaxSubrequests() != 50 {
		t.Errorf("limits %+v: CPU %v subrequests %d", l, l.CPU(), l.MaxSubrequests())
	}
}

func TestBindingValuesAreChecked(t *testing.T) {
	tests := []struct {
		name, binding, want string
	}{
		{"a reserved word is no binding name", "class: { var: x }", `"class" is not a JavaScript identifier`},
		{"a binding name starting with a digit", "1KV: { kv: default }", "JavaScript identifier"},
		{"a kv namespace with a slash", "KV: { kv: a/b }", "field workers[0].bindings.KV.kv"},
		{"a blob bucket too long", "B: { blob: " + strings.Repeat("b", 65) + " }", "field workers[0].bindings.B.blob"},
		{"a class that is no identifier", "DO: { durable_object: my-class }", "not the name of a class"},
		{"a relative secret path", "S: { secret: secrets/token }", "neither a credential name nor an absolute file path"},
		{"a secret named ..", "S: { secret: .. }", "neither a credential name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := "version: 1\nworkers:\n  - name: app\n    script: app.js\n    bindings:\n      " + tt.binding + "\n"
			_, err := Parse("w.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "line 6") {
				t.Errorf("error %v, want one naming line 6 and %q", err, tt.want)
			}
		})
	}
	for _, name := range []string{"App", "", "a b", strings.Repeat("a", 33)} {
		doc := "version: 1\nworkers:\n  - name: \"" + name + "\"\n    script: app.js\n"
		if _, err := Parse("w.yaml", []byte(doc)); err == nil || !strings.Contains(err.Error(), "workers[0].name") {
			t.Errorf("worker name %q: error %v", name, err)
		}
	}
}

func TestAnEtcdStoreConfigLoadsWithItsDefaultsFilledIn(t *testing.T) {
	c, err := Parse("etcd.yaml", []byte("version: 1\nstore:\n  backend: etcd\n  etcd:\n    endpoints:\n      - https://10.0.0.1:2379\n      - https://10.0.0.2:2379\n    tls:\n      ca_file: /etc/etcd/ca.pem\n      cert_file: /etc/etcd/client.pem\n      key_file: /etc/etcd/client-key.pem\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Store.Etcd
	if c.Store.Backend != BackendEtcd || len(e.Endpoints) != 2 || e.Prefix != "/interceptd/" || e.RequestTimeout != 3*time.Second ||
		e.DialTimeout != 5*time.Second || e.MaxRequestBytes != 1536<<10 || e.TLS.KeyFile != "/etc/etcd/client-key.pem" {
		t.Fatalf("store %+v", c.Store)
	}
	if Default().Store.Backend != BackendBolt {
		t.Fatalf("the default backend is %q, want bbolt", Default().Store.Backend)
	}
}
