package config

import (
	"os"
	"path/filepath"
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
}

func TestFullFixtureDecodesEveryField(t *testing.T) {
	c, err := Load("testdata/good/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.DNS.Timeout != 750*time.Millisecond || c.DNS.TTL != 5 || len(c.DNS.Upstreams) != 2 || c.DNS.MaxTCPConnectionsPerSandbox != 16 {
		t.Errorf("dns = %+v", c.DNS)
	}
	if c.Sandbox.WriteResolvConf() || c.Sandbox.InterfacePrefix != "cx" || c.Listen.DNSPort != 18053 {
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
		{"unknown-field.yaml", []string{"line 4", "dns_prot", "not found"}},
		{"mistyped-field.yaml", []string{"line 3", "field dns.timeout", "soon"}},
		{"mistyped-port.yaml", []string{"line 3", "field listen.dns_port", "cannot unmarshal"}},
		{"missing-version.yaml", []string{"field version", "missing"}},
		{"future-version.yaml", []string{"field version", "2 is not supported"}},
		{"unknown-kind.yaml", []string{"field handlers[0].kind", `"kvv"`}},
		{"duplicate-host.yaml", []string{"field handlers[1].host", "twice"}},
		{"pool-overlaps-virtual.yaml", []string{"field sandbox.pool", "overlaps"}},
		{"http-not-loopback.yaml", []string{"field listen.http", "loopback"}},
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
