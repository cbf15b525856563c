package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/interceptd/interceptd/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// AllUsage returns the KV and state usage of every sandbox charged with
// any in etcd, fleet-wide: one range read of the usage counters (P u/),
// never of the records. Bounded by the request timeout like every call.
func (s *Store) AllUsage() (map[string]store.Amounts, error) {
	out := map[string]store.Amounts{}
	p := s.prefix + "u/"
	err := s.call("all_usage", func(ctx context.Context) error {
		r, err := s.cli.Get(ctx, p, clientv3.WithPrefix())
		if err != nil {
			return err
		}
		for _, x := range r.Kvs {
			var a store.Amounts
			if err := json.Unmarshal(x.Value, &a); err != nil {
				return fmt.Errorf("usage %q: %w", x.Key, err)
			}
			out[unesc(strings.TrimPrefix(string(x.Key), p))] = store.Amounts{KV: a.KV, State: a.State}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UsageCache returns a cache of AllUsage that reads etcd again once what
// it holds is older than refresh, for readers that ask often (the usage
// series, read at every scrape): one read answers the readers waiting for
// it, and a failure is kept as long as a success would be, so that scrapes
// during an outage do not each wait out the request timeout.
func (s *Store) UsageCache(refresh time.Duration) *store.UsageCache {
	return store.NewUsageCache(refresh, s.AllUsage)
}

// CheckTxnOps checks that the servers take a transaction of RequiredTxnOps
// compares and operations, the most a state transaction of
// store.MaxTxnOps keys needs: etcd checks the counts before it looks at
// the keys, so the probe compares and reads one scratch key under the
// prefix (P c/txn-ops, which it never writes) and leaves nothing behind,
// even when the daemon dies during it.
func (s *Store) CheckTxnOps(ctx context.Context) error {
	k := s.prefix + "c/txn-ops"
	cmps := make([]clientv3.Cmp, RequiredTxnOps)
	ops := make([]clientv3.Op, RequiredTxnOps)
	for i := range cmps {
		cmps[i] = clientv3.Compare(clientv3.ModRevision(k), "!=", -1)
		ops[i] = clientv3.OpGet(k, clientv3.WithCountOnly())
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	if _, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("a transaction of %d operations: %w", RequiredTxnOps, mapErr(err))
	}
	return nil
}
