package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/etcdstore"
)

// OpenEtcd opens the etcd backend that store.etcd describes: it reads the
// password file and the TLS files, and does not wait for etcd to answer
// (a daemon starts while etcd is down; its KV calls answer
// store_unavailable until etcd is back). quotas are the configured quotas
// (the bbolt store's, which a reload replaces).
func OpenEtcd(c config.Etcd, quotas func() store.Amounts, m *etcdstore.Metrics, log *slog.Logger) (*etcdstore.Store, error) {
	o := etcdstore.Options{
		Endpoints: c.Endpoints, Prefix: c.Prefix,
		DialTimeout: c.DialTimeout, RequestTimeout: c.RequestTimeout,
		MaxRequestBytes: int(c.MaxRequestBytes),
		Quotas:          quotas, Metrics: m, Logger: log,
	}
	if c.Username != "" {
		pw, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.password_file: %w", err)
		}
		o.Username, o.Password = c.Username, strings.TrimRight(string(pw), "\r\n")
	}
	https := false
	for _, ep := range c.Endpoints {
		https = https || strings.HasPrefix(ep, "https://")
	}
	if https || c.TLS.CAFile != "" || c.TLS.CertFile != "" {
		tc, err := etcdstore.TLSConfig(c.TLS.CAFile, c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.tls: %w", err)
		}
		o.TLS = tc
	}
	s, err := etcdstore.Open(o)
	if err != nil {
		return nil, fmt.Errorf("store.etcd: %w", err)
	}
	return s, nil
}

// etcdKinds are the kinds store.backend etcd keeps in etcd.
var etcdKinds = []string{store.KindKV, store.KindState}

// usageRefresh is how old the KV and state usage the metrics report from
// etcd, and the blob usage from the S3 ledger, may be: a scrape reads the
// cache, and each engine is read at most once per refresh (etcd: a range
// read of the usage counters, one small key per sandbox, never the
// records; the ledger: a listing and a read of each owner's record, in
// etcd or bbolt).
const usageRefresh = 10 * time.Second

// engines names the engine that keeps each kind's usage and quotas (for
// sandbox show): this host's bbolt file unless store.backend etcd puts KV
// and state in etcd. Blobs in S3 are charged in their ledger, which the
// operator adds to the usage of the engine named here; Status names "s3"
// for them.
func (d *Daemon) engines() map[string]string {
	out := map[string]string{store.KindKV: "bbolt", store.KindState: "bbolt", store.KindBlob: "bbolt", store.KindDO: "bbolt"}
	if d.etcd != nil {
		for _, k := range etcdKinds {
			out[k] = "etcd"
		}
	}
	return out
}
