// Package etcdstore keeps KV and per-sandbox state spaces in etcd, so that
// every host of a fleet reads and writes one store. It implements
// backend.KVSpaces (and the KV part of backend.Operator); blobs and Durable
// Objects stay in the host's bbolt store (backend.Compose mixes them).
//
// Layout, under Options.Prefix (P):
//
//	P d/<kind>/<scope>/<namespace>/<key>   records (encodeRecord): expiry, owner, metadata, value
//	P x/<expiry, 16 hex digits>/<d key>    index of records with an expiry, for the sweeper
//	P u/<sandbox>                          usage of KV and state charged to a sandbox (JSON)
//	P q/<sandbox>                          a sandbox's quota overrides (JSON)
//	P c/check                              written by Check to prove the prefix writable
//
// kind, scope, namespace and sandbox are escaped (esc) so that none holds a
// '/': spaces never see each other's keys, and the key itself is appended
// raw, so a space's keys list in byte order.
//
// Every write is one etcd transaction that compares the mod revision of
// every key it read (the records, and the usage and quota keys of the
// owners it charges) and retries when one moved: writes, conditions and
// quotas are serialisable across hosts. Expiry is kept in the record and
// filtered on every read, so a key is gone at the instant it expires; the
// sweeper deletes expired records later to reclaim the space and give their
// owners their quota back, in the same kind of transaction.
//
// Every call is bounded by Options.RequestTimeout; an etcd that cannot be
// reached or does not answer in time is store.ErrUnavailable.
package etcdstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/interceptd/interceptd/store"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultMaxRequestBytes is etcd's default request limit (its
// --max-request-bytes, 1.5 MiB).
const DefaultMaxRequestBytes = 1572864

// RequiredTxnOps is the --max-txn-ops the etcd servers must allow: a
// state transaction of store.MaxTxnOps keys puts or deletes each key, and
// deletes and puts an expiry index entry for each, beside the usage of its
// owners, and compares every key it read and its owners' usage and quota
// keys. etcd's default, 128, is enough for small transactions only.
const RequiredTxnOps = 512

// requestReserve is what a write's request holds beside its value: the
// key, metadata, owner, the expiry index and usage keys, and the
// transaction's compares. Values are limited to the request limit less this.
const requestReserve = 64 << 10

// Options configure Open.
type Options struct {
	// Endpoints are the etcd client URLs (http://host:port or https://…).
	Endpoints []string
	// Prefix is put before every key; "/interceptd/" by default. Fleets
	// sharing one etcd with different data use different prefixes.
	Prefix string
	// DialTimeout bounds the first connection. Default 5s.
	DialTimeout time.Duration
	// RequestTimeout bounds every call to etcd. Default 3s.
	RequestTimeout time.Duration
	// Username and Password authenticate to etcd when Username is set.
	Username, Password string
	// TLS is the client TLS configuration; nil: plain connections.
	TLS *tls.Config
	// MaxRequestBytes is the etcd servers' --max-request-bytes. Default
	// DefaultMaxRequestBytes. Values are limited to it less 64 KiB.
	MaxRequestBytes int
	// Limits are the default limits of spaces that do not set their own.
	Limits store.Limits
	// Quotas returns the configured quotas of every sandbox (a sandbox's
	// overrides, SetQuota, replace fields of it); nil: no quotas.
	Quotas func() store.Amounts
	// SweepInterval is how often expired records are deleted. Default 30s.
	SweepInterval time.Duration
	// WatchProbe is how often the cache's watch is asked to prove that it
	// is current; a watch silent for three probes is taken as broken and
	// the cache is dropped and bypassed until it answers. Default 500ms.
	WatchProbe time.Duration
	// Metrics receives request counts, durations and the watch's state;
	// nil records nothing.
	Metrics *Metrics
	// Logger logs watch and sweeper trouble; nil: slog.Default().
	Logger *slog.Logger
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time
}

// TLSConfig builds a client TLS configuration from PEM files: caFile
// verifies the servers (empty: the system roots), certFile and keyFile are
// the client certificate (both or neither).
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading etcd ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd ca_file %s: no PEM certificate in it", caFile)
		}
		c.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("etcd tls: set both cert_file and key_file, or neither")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the etcd client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Store is an open etcd backend. It is safe for concurrent use.
type Store struct {
	cli    *clientv3.Client
	opts   Options
	prefix string
	log    *slog.Logger
	cache  cache
	m      *Metrics
	owners ownerLocks

	stop    chan struct{}
	cancel  context.CancelFunc
	ctx     context.Context
	stopped sync.WaitGroup
	once    sync.Once
}

// Open connects to etcd and starts the cache's watch and the sweeper. It
// does not wait for etcd to answer: a daemon starts while etcd is down and
// answers store_unavailable until it is back (Ping checks it).
func Open(o Options) (*Store, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if o.Prefix == "" {
		o.Prefix = "/interceptd/"
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 3 * time.Second
	}
	if o.MaxRequestBytes == 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = 30 * time.Second
	}
	if o.WatchProbe == 0 {
		o.WatchProbe = 500 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Quotas == nil {
		o.Quotas = func() store.Amounts { return store.Amounts{} }
	}
	o.Limits = o.Limits.WithDefaults()
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: o.DialTimeout,
		Username:    o.Username,
		Password:    o.Password,
		TLS:         o.TLS,
		// The client's own zap logger would print every retry of an
		// unreachable member; interceptd logs what matters through slog.
		Logger:             zap.NewNop(),
		MaxCallSendMsgSize: o.MaxRequestBytes + requestReserve,
		MaxCallRecvMsgSize: 64 << 20,
		// Keepalives find a dead connection while it is idle, so that
		// the first request after an outage does not wait on it.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: o.RequestTimeout,
		// gRPC waits up to two minutes between reconnections by
		// default: an etcd back from an outage would go unused that
		// long. A second at most finds it at once.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: o.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{cli: cli, opts: o, prefix: o.Prefix, log: log, m: o.Metrics, stop: make(chan struct{}), ctx: ctx, cancel: cancel}
	if s.m != nil {
		s.m.watchUp.Set(0)
	}
	s.stopped.Add(2)
	go s.watch()
	go s.sweeper()
	return s, nil
}

// Close stops the watch and the sweeper and closes the client.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		s.cancel()
		s.stopped.Wait()
		err = s.cli.Close()
	})
	return err
}

// Ping checks that etcd answers and that the prefix can be read and
// written: it writes, reads back and deletes P c/check.
func (s *Store) Ping(ctx context.Context) error {
	k := s.prefix + "c/check"
	v := fmt.Sprintf("%d", s.opts.Now().UnixNano())
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	if _, err := s.cli.Put(ctx, k, v); err != nil {
		return fmt.Errorf("writing %s: %w", k, mapErr(err))
	}
	r, err := s.cli.Get(ctx, k)
	if err != nil {
		return fmt.Errorf("reading %s: %w", k, mapErr(err))
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != v {
		return fmt.Errorf("reading %s: did not read back what was written", k)
	}
	if _, err := s.cli.Delete(ctx, k); err != nil {
		return fmt.Errorf("deleting %s: %w", k, mapErr(err))
	}
	return nil
}

// call runs f with a context bounded by the request timeout and records
// it in the metrics under op.
func (s *Store) call(op string, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.RequestTimeout)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	err = mapErr(err)
	s.m.request(op, start, err)
	return err
}

// mapErr turns the client's errors into package store's sentinels:
// anything that says etcd could not be reached or did not answer in time
// is store.ErrUnavailable.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: etcd did not answer in time: %v", store.ErrUnavailable, err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %v", store.ErrClosed, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge), errors.Is(err, rpctypes.ErrGRPCRequestTooLarge):
		return fmt.Errorf("%w: over etcd's request limit (%v)", store.ErrValueTooLarge, err)
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrGRPCTooManyOps):
		return fmt.Errorf("%w: the etcd servers' --max-txn-ops is under what this transaction needs; start them with --max-txn-ops %d or more (%v)",
			store.ErrMisconfigured, RequiredTxnOps, err)
	case errors.Is(err, rpctypes.ErrNoSpace), errors.Is(err, rpctypes.ErrGRPCNoSpace):
		return fmt.Errorf("%w: etcd is out of space: %v", store.ErrDiskFull, err)
	case errors.As(err, &se):
		switch se.GRPCStatus().Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
			return fmt.Errorf("%w: %v", store.ErrUnavailable, err)
		case codes.Canceled:
			return fmt.Errorf("%w: %v", store.ErrClosed, err)
		}
	}
	if strings.Contains(err.Error(), "client connection is closing") {
		return fmt.Errorf("%w: %v", store.ErrClosed, err)
	}
	return fmt.Errorf("etcd: %w", err)
}

// esc escapes a component of a key so that it holds no '/'.
func esc(s string) string {
	if !strings.ContainsAny(s, "/%") {
		return s
	}
	return strings.NewReplacer("%", "%25", "/", "%2F").Replace(s)
}

func unesc(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	return strings.NewReplacer("%2F", "/", "%25", "%").Replace(s)
}

// A record is package store's (store.EncodeRecord): version, expiry in
// unix nanoseconds (0: never), metadata length, owner, metadata, value.
// encodeRecord and decodeRecord: the entry's slices share the record's bytes.
func encodeRecord(e store.Entry) []byte { return store.EncodeRecord(e) }

func decodeRecord(b []byte, withValue bool) (store.Entry, error) {
	return store.DecodeRecord(b, withValue)
}

// charge is what an entry occupies for its owner's quota, as in bbolt: its
// key, metadata and value.
func charge(key string, e store.Entry) int64 {
	return int64(len(key) + len(e.Metadata) + len(e.Value))
}

func (s *Store) expired(t time.Time) bool {
	return !t.IsZero() && !s.opts.Now().Before(t)
}

// dataPrefix is where the records of every space live.
func (s *Store) dataPrefix() string { return s.prefix + "d/" }

func (s *Store) spacePrefix(kind, namespace, scope string) string {
	return s.dataPrefix() + esc(kind) + "/" + esc(scope) + "/" + esc(namespace) + "/"
}

func (s *Store) indexKey(t time.Time, dataKey string) string {
	return fmt.Sprintf("%sx/%016x/%s", s.prefix, uint64(t.UnixNano()), strings.TrimPrefix(dataKey, s.prefix))
}

func (s *Store) usageKey(sandbox string) string { return s.prefix + "u/" + esc(sandbox) }
func (s *Store) quotaKey(sandbox string) string { return s.prefix + "q/" + esc(sandbox) }
