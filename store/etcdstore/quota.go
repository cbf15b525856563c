package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Accounting, as the bbolt store keeps it (store/quota.go), for the KV and
// state records held in etcd: P u/<sandbox> holds what the records charged
// to a sandbox occupy, and every write, delete, sweep and purge changes it
// in the same etcd transaction as the records, on the condition that it did
// not move since it was read. So usage cannot drift from the records, and
// two hosts cannot both let a sandbox take the last of its quota.
//
// Overrides set with SetQuota (P q/<sandbox>) hold for the whole fleet; the
// configured defaults (Options.Quotas) are each host's own config.

// usage is the change of usage a commit makes, by owner.
type usage map[string]*store.Amounts

func (d usage) add(owner, kind string, bytes, keys int64) {
	if owner == "" || (bytes == 0 && keys == 0) {
		return
	}
	a := d[owner]
	if a == nil {
		a = &store.Amounts{}
		d[owner] = a
	}
	x := a.Of(kind)
	x.Bytes += bytes
	x.Keys += keys
}

func (d usage) owners() []string {
	out := make([]string, 0, len(d))
	for o := range d {
		out = append(out, o)
	}
	sort.Strings(out)
	return out
}

// account is an owner's usage and overrides as a commit read them.
type account struct {
	usage              store.Amounts
	overrides          map[string]int64
	usageRev, quotaRev int64
}

// check refuses d when it adds bytes or keys of a kind past the owner's
// quota, as bbolt's charge does: a change that adds nothing of a kind is
// never refused on it.
func (a account) check(owner string, defaults store.Amounts, d *store.Amounts) *store.QuotaError {
	q, err := defaults.WithOverrides(a.overrides)
	if err != nil {
		q = defaults
	}
	for _, kind := range []string{store.KindKV, store.KindState} {
		dx, cur, lim := d.Of(kind), a.usage.Of(kind), q.Of(kind)
		if dx.Bytes > 0 && lim.Bytes > 0 && cur.Bytes+dx.Bytes > lim.Bytes {
			return &store.QuotaError{Sandbox: owner, Kind: kind, Limit: "bytes", Quota: lim.Bytes, Usage: cur.Bytes, Write: dx.Bytes}
		}
		if dx.Keys > 0 && lim.Keys > 0 && cur.Keys+dx.Keys > lim.Keys {
			return &store.QuotaError{Sandbox: owner, Kind: kind, Limit: "keys", Quota: lim.Keys, Usage: cur.Keys, Write: dx.Keys}
		}
	}
	return nil
}

// readAccounts reads the usage and overrides of owners.
func (s *Store) readAccounts(op string, owners []string) (map[string]account, error) {
	out := map[string]account{}
	err := s.call(op+"_read", func(ctx context.Context) error {
		ops := make([]clientv3.Op, 0, 2*len(owners))
		for _, o := range owners {
			ops = append(ops, clientv3.OpGet(s.usageKey(o)), clientv3.OpGet(s.quotaKey(o)))
		}
		r, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return err
		}
		for i, o := range owners {
			out[o] = parseAccount(r.Responses[2*i].GetResponseRange(), r.Responses[2*i+1].GetResponseRange())
		}
		return nil
	})
	return out, err
}

// parseAccount reads an owner's account from the reads of its usage and
// quota keys.
func parseAccount(u, q *etcdserverpb.RangeResponse) account {
	var a account
	if u != nil && len(u.Kvs) == 1 {
		a.usageRev = u.Kvs[0].ModRevision
		json.Unmarshal(u.Kvs[0].Value, &a.usage)
	}
	if q != nil && len(q.Kvs) == 1 {
		a.quotaRev = q.Kvs[0].ModRevision
		json.Unmarshal(q.Kvs[0].Value, &a.overrides)
	}
	return a
}

// putUsage writes an owner's usage, or deletes it when it is zero.
func (s *Store) putUsage(owner string, a store.Amounts) clientv3.Op {
	if a == (store.Amounts{}) {
		return clientv3.OpDelete(s.usageKey(owner))
	}
	b, _ := json.Marshal(store.Amounts{KV: a.KV, State: a.State})
	return clientv3.OpPut(s.usageKey(owner), string(b))
}

// Usage returns what the KV and state records charged to sandbox occupy.
func (s *Store) Usage(sandbox string) (store.Amounts, error) {
	a, err := s.readAccounts("usage", []string{sandbox})
	return a[sandbox].usage, err
}

// Quota returns a sandbox's quotas: the configured ones with its overrides.
func (s *Store) Quota(sandbox string) (store.Amounts, error) {
	a, err := s.readAccounts("quota", []string{sandbox})
	if err != nil {
		return store.Amounts{}, err
	}
	return s.opts.Quotas().WithOverrides(a[sandbox].overrides)
}

// SetQuota replaces a sandbox's overrides, fleet-wide; nil removes them.
func (s *Store) SetQuota(sandbox string, overrides map[string]int64) error {
	if _, err := s.opts.Quotas().WithOverrides(overrides); err != nil {
		return err
	}
	return s.call("set_quota", func(ctx context.Context) error {
		if len(overrides) == 0 {
			_, err := s.cli.Delete(ctx, s.quotaKey(sandbox))
			return err
		}
		b, _ := json.Marshal(overrides)
		_, err := s.cli.Put(ctx, s.quotaKey(sandbox), string(b))
		return err
	})
}

// Purge deletes the KV and state records of every space in the sandbox's
// scope and gives whoever each is charged to its space back. It returns
// store.ErrNothingToPurge when there were none.
func (s *Store) Purge(sandbox string) error {
	scope := esc(store.SandboxScope(sandbox))
	found := false
	for _, kind := range []string{store.KindKV, store.KindState} {
		p := s.dataPrefix() + esc(kind) + "/" + scope + "/"
		n, err := s.deleteRange(p)
		if err != nil {
			return fmt.Errorf("purging %s of sandbox %s: %w", kind, sandbox, err)
		}
		found = found || n > 0
	}
	if !found {
		return store.ErrNothingToPurge
	}
	return nil
}

// deleteRange deletes every record under p in batches, each one
// transaction with the accounting and index entries of its records.
func (s *Store) deleteRange(p string) (int, error) {
	total := 0
	for attempt := 0; attempt < maxAttempts; {
		var r *clientv3.GetResponse
		err := s.call("purge_read", func(ctx context.Context) error {
			var err error
			r, err = s.cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithLimit(100))
			return err
		})
		if err != nil {
			return total, err
		}
		if len(r.Kvs) == 0 {
			return total, nil
		}
		d := usage{}
		var cmps []clientv3.Cmp
		ops := map[string]clientv3.Op{}
		for _, x := range r.Kvs {
			k := string(x.Key)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", x.ModRevision))
			ops[k] = clientv3.OpDelete(k)
			if e, err := decodeRecord(x.Value, true); err == nil {
				kind, name := s.splitDataKey(k)
				d.add(e.Owner, kind, -charge(name, e), -1)
				if !e.Expires.IsZero() {
					ik := s.indexKey(e.Expires, k)
					ops[ik] = clientv3.OpDelete(ik)
				}
			}
		}
		ok, err := s.release("purge", d, cmps, ops)
		if err != nil {
			return total, err
		}
		if !ok {
			attempt++
			continue
		}
		total += len(r.Kvs)
	}
	return total, fmt.Errorf("%w: the records kept changing under the purge", store.ErrUnavailable)
}

// release commits ops with cmps and the accounting change d (which only
// gives space back, so no quota is checked). It reports false when a
// compare failed and the caller should read again.
func (s *Store) release(op string, d usage, cmps []clientv3.Cmp, ops map[string]clientv3.Op) (bool, error) {
	if owners := d.owners(); len(owners) > 0 {
		acct, err := s.readAccounts(op, owners)
		if err != nil {
			return false, err
		}
		for _, o := range owners {
			a := acct[o]
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.usageKey(o)), "=", a.usageRev))
			next := a.usage
			next.Add(*d[o])
			p := s.putUsage(o, next)
			ops[string(p.KeyBytes())] = p
		}
	}
	then := make([]clientv3.Op, 0, len(ops))
	var data []string
	for _, k := range sortedKeys(ops) {
		then = append(then, ops[k])
		if strings.HasPrefix(k, s.dataPrefix()) {
			data = append(data, k)
		}
	}
	var ok bool
	err := s.call(op, func(ctx context.Context) error {
		r, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Commit()
		if err == nil {
			ok = r.Succeeded
		}
		return err
	})
	s.cache.invalidate(data...)
	return ok, err
}

// splitDataKey returns the kind of a full data key and the user's key:
// what follows kind, scope and namespace (which hold no '/').
func (s *Store) splitDataKey(k string) (kind, key string) {
	rest := strings.TrimPrefix(k, s.dataPrefix())
	kind, rest, _ = strings.Cut(rest, "/")
	for n := 0; n < 2; n++ {
		_, rest, _ = strings.Cut(rest, "/")
	}
	return unesc(kind), rest
}

// Check recounts the usage of every owner from the records and says where
// the recorded usage differs.
func (s *Store) Check() error {
	counted := usage{}
	recorded := map[string]store.Amounts{}
	err := s.call("check", func(ctx context.Context) error {
		r, err := s.cli.Get(ctx, s.dataPrefix(), clientv3.WithPrefix())
		if err != nil {
			return err
		}
		rev := r.Header.Revision
		for _, x := range r.Kvs {
			k := string(x.Key)
			e, err := decodeRecord(x.Value, true)
			if err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			kind, name := s.splitDataKey(k)
			counted.add(e.Owner, kind, charge(name, e), 1)
		}
		u, err := s.cli.Get(ctx, s.prefix+"u/", clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			return err
		}
		for _, x := range u.Kvs {
			var a store.Amounts
			json.Unmarshal(x.Value, &a)
			recorded[unesc(strings.TrimPrefix(string(x.Key), s.prefix+"u/"))] = a
		}
		return nil
	})
	if err != nil {
		return err
	}
	var errs []error
	for o, a := range counted {
		if recorded[o] != *a {
			errs = append(errs, fmt.Errorf("sandbox %s: usage recorded %+v, records hold %+v", o, recorded[o], *a))
		}
	}
	for o, a := range recorded {
		if counted[o] == nil {
			errs = append(errs, fmt.Errorf("sandbox %s: usage recorded %+v, no records", o, a))
		}
	}
	return errors.Join(errs...)
}

// Stats counts the expiry index entries not yet swept.
func (s *Store) Stats() (store.Stats, error) {
	var st store.Stats
	err := s.call("stats", func(ctx context.Context) error {
		r, err := s.cli.Get(ctx, s.prefix+"x/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil {
			st.ExpiryEntries = int(r.Count)
		}
		return err
	})
	return st, err
}

// WithLocal returns the operator's view of a host whose KV and state are
// in s and whose blobs and Durable Objects are in local: usage and quotas
// of KV and state come from etcd (fleet-wide), the others from local;
// SetQuota sets the overrides in both; Purge purges both.
func (s *Store) WithLocal(local backend.Operator) backend.Operator {
	return operator{s, local}
}

type operator struct {
	s     *Store
	local backend.Operator
}

func (o operator) Purge(sandbox string) error {
	errLocal := o.local.Purge(sandbox)
	errEtcd := o.s.Purge(sandbox)
	if errors.Is(errLocal, store.ErrNothingToPurge) && errors.Is(errEtcd, store.ErrNothingToPurge) {
		return store.ErrNothingToPurge
	}
	if errors.Is(errLocal, store.ErrNothingToPurge) {
		errLocal = nil
	}
	if errors.Is(errEtcd, store.ErrNothingToPurge) {
		errEtcd = nil
	}
	return errors.Join(errLocal, errEtcd)
}

// Check checks the local store, then that etcd answers and the prefix can
// be written and read back (Ping), that the servers take a transaction as
// large as a state transaction can make (CheckTxnOps), then etcd's usage
// accounting.
func (o operator) Check() error {
	local := o.local.Check()
	if err := o.s.Ping(context.Background()); err != nil {
		return errors.Join(local, fmt.Errorf("etcd at %s: %w", strings.Join(o.s.opts.Endpoints, ","), err))
	}
	if err := o.s.CheckTxnOps(context.Background()); err != nil {
		return errors.Join(local, fmt.Errorf("etcd at %s: %w", strings.Join(o.s.opts.Endpoints, ","), err))
	}
	if err := o.s.Check(); err != nil {
		return errors.Join(local, fmt.Errorf("etcd usage accounting: %w", err))
	}
	return local
}

func (o operator) Stats() (store.Stats, error) {
	st, err := o.local.Stats()
	if err != nil {
		return st, err
	}
	e, err := o.s.Stats()
	st.ExpiryEntries += e.ExpiryEntries
	return st, err
}

// Usage returns the local kinds' usage from the local store and KV and
// state from etcd. With etcd unreachable it returns the local figures
// (KV and state zero) with the error, which names etcd, so that a caller
// can show what it has (sandbox show during an outage).
func (o operator) Usage(sandbox string) (store.Amounts, error) {
	a, err := o.local.Usage(sandbox)
	if err != nil {
		return a, err
	}
	e, err := o.s.Usage(sandbox)
	if err != nil {
		a.KV, a.State = store.Amount{}, store.Amount{}
		return a, fmt.Errorf("kv and state usage from etcd: %w", err)
	}
	a.KV, a.State = e.KV, e.State
	return a, nil
}

// Quota is as Usage: KV and state quotas hold etcd's fleet-wide overrides.
func (o operator) Quota(sandbox string) (store.Amounts, error) {
	a, err := o.local.Quota(sandbox)
	if err != nil {
		return a, err
	}
	e, err := o.s.Quota(sandbox)
	if err != nil {
		// The local store's copy of the overrides may be stale: none.
		a.KV, a.State = store.Amount{}, store.Amount{}
		return a, fmt.Errorf("kv and state quotas from etcd: %w", err)
	}
	a.KV, a.State = e.KV, e.State
	return a, nil
}

// SetQuota sets the overrides in both stores. Removing them (what every
// sandbox create and delete does) while etcd cannot be reached is logged
// and not an error: a sandbox is created and deleted while etcd is down,
// and an override left in etcd is replaced by the next create that sets
// one.
func (o operator) SetQuota(sandbox string, overrides map[string]int64) error {
	if err := o.local.SetQuota(sandbox, overrides); err != nil {
		return err
	}
	err := o.s.SetQuota(sandbox, overrides)
	if len(overrides) == 0 && errors.Is(err, store.ErrUnavailable) {
		o.s.log.Warn("etcd store: could not remove a sandbox's quota overrides from etcd", "sandbox", sandbox, "err", err)
		return nil
	}
	return err
}
