package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	"github.com/interceptd/interceptd/store/s3store/s3test"
)

// TestKVInEtcdAndBlobsInS3TogetherServeAndPurgeASandbox runs one daemon with
// both remote engines at once (backend.Compose of etcd, S3 and bbolt), as a
// fleet would: every kind answers from its own engine, `store --check`
// checks both, and a purge removes the sandbox's data from each of them.
// The etcd member and the S3 server run on the loopback of the daemon's own
// host namespace.
func TestKVInEtcdAndBlobsInS3TogetherServeAndPurgeASandbox(t *testing.T) {
	requireRoot(t)
	etcdtest.Binary(t)
	if s3test.Binary() == "" {
		t.Skip("no SeaweedFS weed binary (.ci/test builds it)")
	}
	keys := t.TempDir()
	os.WriteFile(filepath.Join(keys, "access"), []byte(s3test.AccessKey+"\n"), 0o600)
	os.WriteFile(filepath.Join(keys, "secret"), []byte(s3test.SecretKey+"\n"), 0o600)
	// The config names the S3 port before the server starts.
	ports, err := s3test.NamespacePorts()
	if err != nil {
		t.Fatal(err)
	}
	s3Port := ports.S3()
	extra := fmt.Sprintf(`store:
  backend: etcd
  etcd:
    endpoints: ["http://127.0.0.1:23791"]
    prefix: /e2e-%s/
    request_timeout: 3s
  blobs:
    backend: s3
    s3:
      endpoint: 127.0.0.1:%d
      bucket: %s
      region: us-east-1
      prefix: mixed/
      access_key_file: %s
      secret_key_file: %s
      insecure: true
      request_timeout: 3s
`, randomID(), s3Port, s3Bucket, filepath.Join(keys, "access"), filepath.Join(keys, "secret")) + perSandboxHandlers
	e := NewEnv(t, Options{ExtraConfig: extra, NoStart: true})
	etcdtest.StartCluster(t, []etcdtest.MemberSpec{{Client: "127.0.0.1:23791", Peer: "127.0.0.1:23801", Netns: e.HostNS}})
	srv := s3test.Start(t, s3test.Options{IP: "127.0.0.1", Netns: "/run/netns/" + e.HostNS, Buckets: []string{s3Bucket}, Ports: ports})
	if srv.Port() != s3Port {
		t.Fatalf("the S3 server is on port %d, the config says %d", srv.Port(), s3Port)
	}
	e.Start()
	sb := e.Create("mixed")

	writes := []struct{ url, body string }{
		{"http://private.kv/k", "kv in etcd"},
		{"http://state.do/s", "state in etcd"},
		{"http://private.r2/o", "blob in s3"},
	}
	for _, w := range writes {
		e.MustIn(sb, "curl", "-sS", "-f", "-X", "PUT", "--data", w.body, w.url)
		if got := e.MustIn(sb, "curl", "-sS", "-f", w.url); got != w.body {
			t.Errorf("%s read back %q, want %q", w.url, got, w.body)
		}
	}
	// The S3-held blob is charged to the sandbox in etcd, and held to
	// its quota: a second object past blob.keys=1 is the bbolt store's
	// 507, and nothing of it is stored.
	out, errOut, code := e.CLI("sandbox", "show", "mixed")
	var shown struct {
		Usage store.Amounts `json:"usage"`
	}
	if err := json.Unmarshal([]byte(out), &shown); code != 0 || err != nil {
		t.Fatalf("sandbox show: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	// Key and content, and the headers curl sent with it.
	if u := shown.Usage.Blob; u.Keys != 1 || u.Bytes < int64(len("o")+len("blob in s3")) {
		t.Errorf("sandbox show charges the S3 blob as %+v, want 1 object of at least 11 bytes", u)
	}
	// The blob usage series and status read the same ledger (the series
	// through a cache of up to 10 s, hence the wait), not the bbolt file.
	series := `interceptd_store_usage_bytes{kind="blob",sandbox="mixed"}`
	var m string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		m = e.Scrape()
		if v, _ := sample(m, series); v == float64(shown.Usage.Blob.Bytes) || time.Now().After(deadline) {
			break
		}
	}
	if v, ok := sample(m, series); !ok || v != float64(shown.Usage.Blob.Bytes) {
		t.Errorf("%s is %v (present: %v), want sandbox show's %d: not the S3 ledger's figure", series, v, ok, shown.Usage.Blob.Bytes)
	}
	if v, ok := sample(m, `interceptd_store_usage_engine{engine="s3",kind="blob"}`); !ok || v != 1 {
		t.Errorf("interceptd_store_usage_engine for blob from s3: %v %v, want 1", v, ok)
	}
	if out, _, code := e.CLI("status"); code != 0 || !strings.Contains(out, "objects (s3 ledger in etcd, fleet-wide)") || strings.Contains(out, "blob 0.0 MiB in 0 objects") {
		t.Errorf("status (exit %d) does not report the blob usage from the S3 ledger:\n%s", code, out)
	}
	if out, errOut, code := e.CLI("sandbox", "quota", "mixed", "--quota", "blob.keys=1"); code != 0 {
		t.Fatalf("sandbox quota: exit %d\n%s%s", code, out, errOut)
	}
	if code, reason := e.put(sb, "http://private.r2/o2", 10); code != "507" || !strings.HasPrefix(reason, "quota_exceeded") || !strings.Contains(reason, "blob") {
		t.Errorf("a second object past blob.keys=1: %s %q, want 507 quota_exceeded naming blob", code, reason)
	}
	if _, code := curlOut(e, sb, "http://private.r2/o2"); code != "404" {
		t.Errorf("the refused object answers %s, want 404", code)
	}
	if out, errOut, code := e.CLI("store", "--check"); code != 0 {
		t.Errorf("store --check with etcd and S3 up: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := e.CLI("sandbox", "delete", "--purge", "mixed"); code != 0 {
		t.Fatalf("sandbox delete --purge: exit %d\n%s%s", code, out, errOut)
	}
	sb = e.Create("mixed")
	for _, w := range writes {
		_, code := curlOut(e, sb, w.url)
		if code != "404" {
			t.Errorf("after the purge %s answers %s, want 404 (its engine kept the sandbox's data)", w.url, code)
		}
	}
	if strings.Contains(e.Log(), "level=ERROR") {
		t.Errorf("the daemon logged errors:\n%s", e.Log())
	}
}
