package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestChangesSortsWhatAReloadTakesFromWhatNeedsARestart(t *testing.T) {
	tests := []struct {
		name          string
		doc           string
		live, restart []string
	}{
		{"the same file changes nothing", "", nil, nil},
		{"a handler and the default policy change live", "handlers:\n  - host: x.test\n    kind: respond\npolicy:\n  internet: false\n",
			[]string{"handlers", "policy"}, nil},
		{"limits and dns settings change live", "listen:\n  max_requests_per_second_per_sandbox: 7\ndns:\n  ttl: 9\n  upstreams: [\"127.0.0.1:53\"]\n",
			[]string{"dns.ttl", "dns.upstreams", "listen.max_requests_per_second_per_sandbox"}, nil},
		{"a listener needs a restart, named by its field", "listen:\n  http: 127.0.0.1:1081\n", nil, []string{"listen.http"}},
		{"addressing needs a restart", "sandbox:\n  pool: 10.99.0.0/16\ndns:\n  virtual_cidr: 198.19.0.0/16\n", nil, []string{"dns.virtual_cidr", "sandbox.pool"}},
		{"the store backend and its etcd settings need a restart", "store:\n  backend: etcd\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n    request_timeout: 1s\n",
			nil, []string{"store.backend", "store.etcd"}},
		{"the blob backend needs a restart", "store:\n  blobs:\n    s3:\n      bucket: other\n      request_timeout: 1s\n", nil, []string{"store.blobs"}},
		{"a quota changes live, the data dir does not", "data_dir: /elsewhere\nquota:\n  kv:\n    keys: 5\n", []string{"quota.kv"}, []string{"data_dir"}},
	}
	running := Default()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, err := Parse("next.yaml", []byte("version: 1\n"+tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			live, restart := Changes(running, next)
			if !reflect.DeepEqual(live, tt.live) || !reflect.DeepEqual(restart, tt.restart) {
				t.Errorf("Changes: live %q, restart %q; want %q, %q", live, restart, tt.live, tt.restart)
			}
		})
	}
}

func TestARereadConfigKeepsTheCommandLinesOverrides(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("version: 1\ndata_dir: /from/the/file\n"), 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	c.Override(func(c *Config) { c.DataDir = "/from/the/flag" })
	os.WriteFile(path, []byte("version: 1\ndata_dir: /from/the/file\ndns:\n  ttl: 5\n"), 0o644)
	n, err := c.Reread()
	if err != nil {
		t.Fatal(err)
	}
	if live, restart := Changes(c, n); n.DataDir != "/from/the/flag" || len(restart) != 0 || len(live) != 1 {
		t.Errorf("reread: data_dir %q, live %q, restart %q; want the flag's data_dir and only dns.ttl changed", n.DataDir, live, restart)
	}
}
