package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	"github.com/interceptd/interceptd/store/s3store"
	"github.com/interceptd/interceptd/store/s3store/s3test"
)

func TestOpenEtcdReadsThePasswordFileAndNamesTheFieldsItCannotUse(t *testing.T) {
	c := etcdtest.Start(t)
	admin := c.Client(t)
	ctx := context.Background()
	if _, err := admin.UserAdd(ctx, "root", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	// As systemd-creds or an editor leaves it: with a newline.
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	base := config.Default().Store.Etcd
	base.Endpoints, base.RequestTimeout = c.Endpoints(), time.Second
	quotas := func() store.Amounts { return store.Amounts{} }

	t.Run("the password file's password, without its newline, is let in", func(t *testing.T) {
		e := base
		e.Username, e.PasswordFile = "root", pw
		s, err := OpenEtcd(e, quotas, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	tests := []struct {
		name, field string
		edit        func(*config.Etcd)
	}{
		{"a password file that does not exist", "store.etcd.password_file", func(e *config.Etcd) {
			e.Username, e.PasswordFile = "root", filepath.Join(dir, "missing")
		}},
		{"a CA file that does not exist", "store.etcd.tls", func(e *config.Etcd) { e.TLS.CAFile = filepath.Join(dir, "missing.pem") }},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is an error naming "+tt.field, func(t *testing.T) {
			e := base
			tt.edit(&e)
			s, err := OpenEtcd(e, quotas, nil, nil)
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("%v does not name %s", err, tt.field)
			}
		})
	}
}

func TestStatusReportsKVAndStateUsageFromEtcdAndSaysWhenItCannotBeRead(t *testing.T) {
	c := etcdtest.Start(t)
	cfg := config.Default()
	cfg.Store.Etcd.Endpoints, cfg.Store.Etcd.RequestTimeout = c.Endpoints(), 500*time.Millisecond
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	es, err := OpenEtcd(cfg.Store.Etcd, func() store.Amounts { return store.Amounts{} }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { es.Close() })
	zero := func() int64 { return 0 }
	d := &Daemon{cfg: cfg, db: db, etcd: es, started: time.Now(),
		counts: counts{sandboxes: func() int { return 0 }, requests: zero, dnsQueries: zero, denials: zero}}
	// Written by "another host": the figures are the fleet's.
	if err := es.Keys(store.KindKV, "ns", store.SandboxScope("web"), store.Limits{}).Put("k", store.Entry{Value: []byte("12345"), Owner: "web"}); err != nil {
		t.Fatal(err)
	}
	// The bbolt file's own kv usage, which must not be what is reported.
	if err := db.Keys(store.KindKV, "ns", store.SandboxScope("web"), store.Limits{}).Put("local-only", store.Entry{Value: []byte("x"), Owner: "web"}); err != nil {
		t.Fatal(err)
	}

	st := d.Status()
	if st.StoreUnavailable != nil || st.StoreUsage.KV != (store.Amount{Bytes: 6, Keys: 1}) {
		t.Errorf("with etcd answering: usage %+v, unavailable %+v; want kv 6 bytes in 1 key from etcd", st.StoreUsage, st.StoreUnavailable)
	}
	if st.StoreEngines["kv"] != "etcd" || st.StoreEngines["state"] != "etcd" || st.StoreEngines["blob"] != "bbolt" {
		t.Errorf("engines %v", st.StoreEngines)
	}

	c.Members[0].Kill()
	start := time.Now()
	st = d.Status()
	took := time.Since(start)
	if o := st.StoreUnavailable; o == nil || o.Engine != "etcd" || strings.Join(o.Kinds, ",") != "kv,state" || !strings.Contains(o.Reason, "store_unavailable") {
		t.Errorf("with etcd down: unavailable %+v, want kv and state from etcd with the reason", o)
	}
	if st.StoreUsage.KV != (store.Amount{}) {
		t.Errorf("with etcd down the kv usage is %+v: the bbolt file's figure passed off as etcd's", st.StoreUsage.KV)
	}
	if limit := cfg.Store.Etcd.RequestTimeout + 500*time.Millisecond; took > limit {
		t.Errorf("status took %v with etcd down, over the request timeout (%v)", took, cfg.Store.Etcd.RequestTimeout)
	}
}

func TestStatusReportsBlobUsageFromTheS3LedgerInEtcdAndSaysWhenItCannotBeRead(t *testing.T) {
	c := etcdtest.Start(t)
	srv := s3test.Start(t, s3test.Options{Buckets: []string{"status"}})
	cfg := config.Default()
	cfg.Store.Etcd.Endpoints, cfg.Store.Etcd.RequestTimeout = c.Endpoints(), time.Second
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	es, err := OpenEtcd(cfg.Store.Etcd, func() store.Amounts { return store.Amounts{} }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { es.Close() })
	s3, err := s3store.New(s3store.Options{Endpoint: srv.Endpoint(), Bucket: "status", Region: "us-east-1", PathStyle: true, Insecure: true,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s3.Account(es, es)
	zero := func() int64 { return 0 }
	d := &Daemon{cfg: cfg, db: db, etcd: es, s3: s3, started: time.Now(),
		counts: counts{sandboxes: func() int { return 0 }, requests: zero, dnsQueries: zero, denials: zero}}
	if _, err := s3.Blobs("b", store.SandboxScope("web"), store.Limits{}).Put("k", strings.NewReader("12345"), store.PutOptions{Size: 5, Owner: "web"}); err != nil {
		t.Fatal(err)
	}
	// A blob in the bbolt file, which holds none of S3's: not reported.
	if _, err := db.Blobs("b", store.SandboxScope("web"), store.Limits{}).Put("local-only", strings.NewReader("x"), store.PutOptions{Size: 1, Owner: "web"}); err != nil {
		t.Fatal(err)
	}

	st := d.Status()
	if st.StoreUnavailable != nil || st.StoreUsage.Blob != (store.Amount{Bytes: 1 + 5, Keys: 1}) {
		t.Errorf("with etcd answering: usage %+v, unavailable %+v; want blob 6 bytes in 1 object from the ledger", st.StoreUsage, st.StoreUnavailable)
	}
	if st.StoreEngines["blob"] != "s3" || st.StoreBlobLedger != "etcd" || st.StoreEngines["kv"] != "etcd" {
		t.Errorf("engines %v, ledger %q; want blob from s3 with its ledger in etcd", st.StoreEngines, st.StoreBlobLedger)
	}

	c.Members[0].Kill()
	start := time.Now()
	st = d.Status()
	took := time.Since(start)
	if o := st.StoreUnavailable; o == nil || o.Engine != "etcd" || strings.Join(o.Kinds, ",") != "kv,state,blob" {
		t.Errorf("with etcd down: unavailable %+v, want kv, state and blob from etcd", o)
	}
	if st.StoreUsage.Blob != (store.Amount{}) {
		t.Errorf("with etcd down the blob usage is %+v: the bbolt file's figure passed off as the ledger's", st.StoreUsage.Blob)
	}
	// etcd's counters and the ledger are read side by side.
	if limit := cfg.Store.Etcd.RequestTimeout + 500*time.Millisecond; took > limit {
		t.Errorf("status took %v with etcd down, over one request timeout (%v)", took, cfg.Store.Etcd.RequestTimeout)
	}
}
