package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/s3store"
	"github.com/interceptd/interceptd/store/s3store/s3test"
)

func TestTheS3KeysComeFromFilesOrCredentialsAndAFailureNamesTheField(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "access"), []byte("AK\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("SK\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600)
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	base := config.S3{Endpoint: "127.0.0.1:9", Bucket: "blobs", PathStyle: true, Insecure: true, RequestTimeout: time.Second}
	tests := []struct {
		name  string
		tweak func(*config.S3)
		want  string // "" for success
	}{
		{"keys from files", func(c *config.S3) {
			c.AccessKeyFile, c.SecretKeyFile = filepath.Join(dir, "access"), filepath.Join(dir, "secret")
		}, ""},
		{"keys from systemd credentials", func(c *config.S3) { c.AccessKeyCredential, c.SecretKeyCredential = "access", "secret" }, ""},
		{"a missing key file names its field", func(c *config.S3) {
			c.AccessKeyFile, c.SecretKeyFile = filepath.Join(dir, "access"), filepath.Join(dir, "nope")
		}, "store.blobs.s3.secret_key"},
		{"an empty key file names its field", func(c *config.S3) {
			c.AccessKeyFile, c.SecretKeyFile = filepath.Join(dir, "empty"), filepath.Join(dir, "secret")
		}, "store.blobs.s3.access_key"},
		{"a credential that is a path is refused", func(c *config.S3) { c.AccessKeyCredential, c.SecretKeyCredential = "../access", "secret" }, "store.blobs.s3.access_key_credential"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.tweak(&c)
			s, err := OpenS3Blobs(c, nil)
			switch {
			case tt.want == "" && (err != nil || s == nil):
				t.Fatalf("open: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("open: %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestStatusReportsBlobUsageFromTheS3LedgerInTheBboltFile(t *testing.T) {
	srv := s3test.Start(t, s3test.Options{Buckets: []string{"status"}})
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s3, err := s3store.New(s3store.Options{Endpoint: srv.Endpoint(), Bucket: "status", Region: "us-east-1", PathStyle: true, Insecure: true,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s3.Account(backend.Bolt(db), db)
	zero := func() int64 { return 0 }
	d := &Daemon{cfg: config.Default(), db: db, s3: s3, started: time.Now(),
		counts: counts{sandboxes: func() int { return 0 }, requests: zero, dnsQueries: zero, denials: zero}}
	if _, err := s3.Blobs("b", store.SandboxScope("web"), store.Limits{}).Put("k", strings.NewReader("12345"), store.PutOptions{Size: 5, Owner: "web"}); err != nil {
		t.Fatal(err)
	}
	// The ledger's record is a KV entry of the bbolt file, charged to no
	// one: the file's kv usage stays 0 and its blob usage is not the
	// ledger's.
	st := d.Status()
	if st.StoreUnavailable != nil || st.StoreUsage.Blob != (store.Amount{Bytes: 1 + 5, Keys: 1}) || st.StoreUsage.KV != (store.Amount{}) {
		t.Errorf("usage %+v, unavailable %+v; want blob 6 bytes in 1 object from the ledger and no kv", st.StoreUsage, st.StoreUnavailable)
	}
	if st.StoreEngines["blob"] != "s3" || st.StoreBlobLedger != "bbolt" || st.StoreEngines["kv"] != "bbolt" {
		t.Errorf("engines %v, ledger %q; want blob from s3 with its ledger in bbolt", st.StoreEngines, st.StoreBlobLedger)
	}
}
