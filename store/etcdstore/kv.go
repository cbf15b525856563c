package etcdstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is one KV or state space in etcd.
type KV struct {
	s      *Store
	kind   string
	prefix string // the space's key prefix (spacePrefix)
	limits store.Limits
}

// Keys implements backend.KVSpaces. Values are limited to what one etcd
// request carries (MaxRequestBytes less 64 KiB), whatever l asks for.
func (s *Store) Keys(kind, namespace, scope string, l store.Limits) backend.KV {
	d := s.opts.Limits
	if l.MaxKeyBytes == 0 {
		l.MaxKeyBytes = d.MaxKeyBytes
	}
	if l.MaxValueBytes == 0 {
		l.MaxValueBytes = d.MaxValueBytes
	}
	if l.MaxMetadataBytes == 0 {
		l.MaxMetadataBytes = d.MaxMetadataBytes
	}
	if max := s.MaxValueBytes(); l.MaxValueBytes > max {
		l.MaxValueBytes = max
	}
	return &KV{s: s, kind: kind, prefix: s.spacePrefix(kind, namespace, scope), limits: l}
}

// MaxValueBytes is the largest value a write takes: etcd's request limit
// less what a write carries beside the value.
func (s *Store) MaxValueBytes() int { return s.opts.MaxRequestBytes - requestReserve }

// ValueLimitNote says where the space's value limit comes from when it is
// etcd's request limit rather than the handler's own max_value_bytes, and
// "" otherwise. The kv handler refuses a large body before the store sees
// it, and puts this in its answer, so that the reason is the same whichever
// check refuses first.
func (kv *KV) ValueLimitNote() string {
	if kv.limits.MaxValueBytes != kv.s.MaxValueBytes() {
		return ""
	}
	return fmt.Sprintf("etcd's request limit: the etcd servers' --max-request-bytes of %d bytes (store.etcd.max_request_bytes) less %d for the key, metadata and bookkeeping",
		kv.s.opts.MaxRequestBytes, requestReserve)
}

// Limits implements backend.KV.
func (kv *KV) Limits() store.Limits { return kv.limits }

// CheckKey implements backend.KV.
func (kv *KV) CheckKey(key string) error {
	if key == "" || !utf8.ValidString(key) {
		return store.ErrInvalidKey
	}
	if len(key) > kv.limits.MaxKeyBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", store.ErrKeyTooLarge, len(key), kv.limits.MaxKeyBytes)
	}
	return nil
}

func (kv *KV) checkEntry(key string, e store.Entry) error {
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	if len(e.Owner) > 255 {
		return fmt.Errorf("owner %q: longer than 255 bytes", e.Owner)
	}
	if t := e.Expires; !t.IsZero() && (!t.After(time.Unix(0, 0)) || t.After(store.MaxExpiry)) {
		return fmt.Errorf("%w: expiry %s: outside what the store holds, 1970-01-01T00:00:00Z to %s",
			store.ErrInvalidExpiry, t.UTC().Format(time.RFC3339Nano), store.MaxExpiry.Format(time.RFC3339))
	}
	if len(e.Value) > kv.limits.MaxValueBytes {
		if note := kv.ValueLimitNote(); note != "" {
			return fmt.Errorf("%w: %d bytes, limit %d (%s)", store.ErrValueTooLarge, len(e.Value), kv.limits.MaxValueBytes, note)
		}
		return fmt.Errorf("%w: %d bytes, limit %d", store.ErrValueTooLarge, len(e.Value), kv.limits.MaxValueBytes)
	}
	if e.Metadata != nil {
		if len(e.Metadata) > kv.limits.MaxMetadataBytes {
			return fmt.Errorf("%w: %d bytes, limit %d", store.ErrMetadataTooLarge, len(e.Metadata), kv.limits.MaxMetadataBytes)
		}
		if !json.Valid(e.Metadata) {
			return store.ErrInvalidMetadata
		}
	}
	return nil
}

// Get implements backend.KV: from the cache when the watch keeps it
// current, else a linearizable read, so that a write acknowledged on any
// host is seen.
func (kv *KV) Get(key string) (store.Entry, error) {
	if err := kv.CheckKey(key); err != nil {
		return store.Entry{}, err
	}
	// Built on the stack and looked up without a string: a hit
	// allocates nothing for it.
	var kb [256]byte
	kbs := append(append(kb[:0], kv.prefix...), key...)
	if e, ok := kv.s.cache.get(kbs); ok {
		kv.s.m.cacheRead("hit")
		if kv.s.expired(e.Expires) {
			return store.Entry{}, store.ErrNotFound
		}
		return e, nil
	}
	gen, live := kv.s.cache.token()
	if live {
		kv.s.m.cacheRead("miss")
	} else {
		kv.s.m.cacheRead("bypass")
	}
	k := string(kbs)
	var raw []byte
	found := false
	err := kv.s.call("get", func(ctx context.Context) error {
		r, err := kv.s.cli.Get(ctx, k)
		if err == nil && len(r.Kvs) == 1 {
			raw, found = r.Kvs[0].Value, true
		}
		return err
	})
	if err != nil {
		return store.Entry{}, err
	}
	if !found {
		return store.Entry{}, store.ErrNotFound
	}
	e, err := decodeRecord(raw, true)
	if err != nil {
		return store.Entry{}, fmt.Errorf("key %q: %w", key, err)
	}
	// The cache holds expired entries too: they answer not found as
	// well as a read would, until the sweeper's delete drops them.
	kv.s.cache.fill(k, e, gen)
	if kv.s.expired(e.Expires) {
		return store.Entry{}, store.ErrNotFound
	}
	return e, nil
}

// Put implements backend.KV.
func (kv *KV) Put(key string, e store.Entry) error {
	if err := kv.checkEntry(key, e); err != nil {
		return err
	}
	_, err := kv.commit("put", store.Txn{Writes: []store.Write{{Key: key, Entry: e}}})
	return err
}

// Delete implements backend.KV.
func (kv *KV) Delete(key string) error {
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	_, err := kv.commit("delete", store.Txn{Deletes: []string{key}})
	return err
}

func encodeCursor(last string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("e1:" + last))
}

func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !bytes.HasPrefix(b, []byte("e1:")) {
		return "", store.ErrInvalidCursor
	}
	return string(b[3:]), nil
}

// List implements backend.KV. It reads pages of records from etcd until
// it has one live key more than the page holds (that one only says that
// more follow), skipping expired ones.
func (kv *KV) List(o store.ListOptions) (store.ListResult, error) {
	res := store.ListResult{Keys: []store.ListEntry{}}
	if o.Limit <= 0 || o.Limit > store.MaxListLimit {
		o.Limit = store.MaxListLimit
	}
	after, err := decodeCursor(o.Cursor)
	if err != nil {
		return res, err
	}
	from := kv.prefix + o.Prefix
	if after != "" && after >= o.Prefix {
		from = kv.prefix + after + "\x00" // the first key after `after`
	}
	end := clientv3.GetPrefixRangeEnd(kv.prefix + o.Prefix)
	var rev int64
	for {
		var r *clientv3.GetResponse
		err := kv.s.call("list", func(ctx context.Context) error {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(o.Limit + 1))}
			if rev != 0 {
				// Every page of etcd's that makes one of ours is read
				// at one revision.
				opts = append(opts, clientv3.WithRev(rev))
			}
			var err error
			r, err = kv.s.cli.Get(ctx, from, opts...)
			return err
		})
		if err != nil {
			return store.ListResult{Keys: []store.ListEntry{}}, err
		}
		rev = r.Header.Revision
		for _, x := range r.Kvs {
			name := string(x.Key[len(kv.prefix):])
			e, err := decodeRecord(x.Value, false)
			if err != nil || kv.s.expired(e.Expires) {
				continue
			}
			if len(res.Keys) == o.Limit {
				res.Cursor = encodeCursor(res.Keys[len(res.Keys)-1].Name)
				return res, nil
			}
			le := store.ListEntry{Name: name}
			if e.Metadata != nil {
				le.Metadata = bytes.Clone(e.Metadata)
			}
			if !e.Expires.IsZero() {
				le.Expiration = e.Expires.Unix()
			}
			res.Keys = append(res.Keys, le)
		}
		if !r.More || len(r.Kvs) == 0 {
			res.ListComplete = true
			return res, nil
		}
		from = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	}
}

// Apply implements backend.KV.
func (kv *KV) Apply(t store.Txn) (map[string]*store.Entry, error) {
	if err := t.Check(kv.CheckKey); err != nil {
		return nil, err
	}
	size := 0
	for _, w := range t.Writes {
		if err := kv.checkEntry(w.Key, w.Entry); err != nil {
			return nil, fmt.Errorf("write %q: %w", w.Key, err)
		}
		size += len(w.Key) + len(w.Entry.Value) + len(w.Entry.Metadata)
	}
	if size > kv.s.MaxValueBytes() {
		return nil, fmt.Errorf("%w: the transaction writes %d bytes, over etcd's request limit of %d bytes less %d for bookkeeping",
			store.ErrValueTooLarge, size, kv.s.opts.MaxRequestBytes, requestReserve)
	}
	return kv.commit("txn", t)
}

// held is what a key holds at the revision a commit read.
type held struct {
	rev   int64 // mod revision; 0: absent
	raw   []byte
	entry store.Entry
	ok    bool // a record, expired or not
}

func (h held) live(s *Store) bool { return h.ok && !s.expired(h.entry.Expires) }

// maxAttempts bounds how often a commit re-reads after another writer moved
// a key it read; each attempt is bounded by the request timeout.
const maxAttempts = 50

// view is what a commit read in one etcd request: the keys it touches
// and the accounting of the owners it (expects to) charge, all at one
// revision.
type view struct {
	recs  map[string]held
	accts map[string]account
	// mixed: some accounts were handed over by this host's last commit
	// rather than read with the records, so the view may not be one
	// revision's. It may decide a commit (the compares hold it to what
	// etcd holds) but not refuse one.
	mixed bool
	// locked are the owners whose stripes the commit holds (those its
	// writes charge): the only ones it hands its accounting on for.
	locked map[string]bool
}

// commit runs t (validated) as one etcd transaction: it reads every key
// t touches and the accounting of the owners its writes charge, in one
// request at one revision, decides, and writes on the condition that none
// of the keys it read moved since. When one did, the transaction's Else
// branch has read them all again, at the revision it failed at, and the
// commit decides again from that: a write is two requests, and each
// conflict one more. (A third request reads the accounting of an owner
// the first read could not foresee: that of a record a write replaces
// or a delete removes, when another sandbox's.)
func (kv *KV) commit(op string, t store.Txn) (map[string]*store.Entry, error) {
	keys := txnKeys(t)
	var owners []string
	seen := map[string]bool{}
	for _, w := range t.Writes {
		if o := w.Entry.Owner; o != "" && !seen[o] {
			seen[o] = true
			owners = append(owners, o)
		}
	}
	sort.Strings(owners)
	var v view
	err := kv.s.call(op+"_read", func(ctx context.Context) error {
		r, err := kv.s.cli.Txn(ctx).Then(kv.readOps(keys, owners)...).Commit()
		if err == nil {
			v = kv.parseView(keys, owners, r.Responses)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	// Writes charged to one owner all compare that owner's usage key:
	// concurrent ones on this host would make each other read again
	// until their time ran out. They take turns here instead, so that
	// only other hosts' writes conflict; but only for the transaction:
	// they read before, overlapping, and the one whose turn it is takes
	// the owner's accounting as the one before it left it, which is
	// newer than its own read whenever that one committed since.
	defer kv.s.lockOwners(t.Writes)()
	v.locked = seen
	kv.s.takeHanded(kv, &v)
	deadline := time.Now().Add(kv.s.opts.RequestTimeout)
	for attempt := 0; ; attempt++ {
		reads, done, err := kv.try(op, t, keys, &v)
		if err != nil || done {
			return reads, err
		}
		kv.s.m.conflict(op)
		if attempt == maxAttempts || time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: the keys kept changing under %d attempts of a %s", store.ErrUnavailable, attempt+1, op)
		}
	}
}

// txnKeys are the keys t touches, each once, in a fixed order.
func txnKeys(t store.Txn) []string {
	seen := map[string]bool{}
	var keys []string
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	for _, c := range t.Conditions {
		add(c.Key)
	}
	for _, k := range t.Reads {
		add(k)
	}
	for _, k := range t.Deletes {
		add(k)
	}
	for _, w := range t.Writes {
		add(w.Key)
	}
	return keys
}

// readOps reads keys (a space's) and the usage and quota keys of owners.
func (kv *KV) readOps(keys, owners []string) []clientv3.Op {
	s := kv.s
	ops := make([]clientv3.Op, 0, len(keys)+2*len(owners))
	for _, k := range keys {
		ops = append(ops, clientv3.OpGet(kv.prefix+k))
	}
	for _, o := range owners {
		ops = append(ops, clientv3.OpGet(s.usageKey(o)), clientv3.OpGet(s.quotaKey(o)))
	}
	return ops
}

// parseView reads the answers to readOps(keys, owners).
func (kv *KV) parseView(keys, owners []string, rs []*etcdserverpb.ResponseOp) view {
	v := view{recs: make(map[string]held, len(keys)), accts: make(map[string]account, len(owners))}
	for i, k := range keys {
		h := held{}
		if g := rs[i].GetResponseRange(); g != nil && len(g.Kvs) == 1 {
			h.rev, h.raw = g.Kvs[0].ModRevision, g.Kvs[0].Value
			if e, err := decodeRecord(h.raw, true); err == nil {
				h.entry, h.ok = e, true
			}
		}
		v.recs[k] = h
	}
	rs = rs[len(keys):]
	for i, o := range owners {
		v.accts[o] = parseAccount(rs[2*i].GetResponseRange(), rs[2*i+1].GetResponseRange())
	}
	return v
}

func (v *view) owners() []string { return sortedKeys(v.accts) }

// reread replaces a mixed v with a read of all its keys at one revision,
// so that the commit decides again on it.
func (kv *KV) reread(op string, keys []string, v *view) error {
	accts := v.owners()
	return kv.s.call(op+"_read", func(ctx context.Context) error {
		r, err := kv.s.cli.Txn(ctx).Then(kv.readOps(keys, accts)...).Commit()
		if err == nil {
			locked := v.locked
			*v = kv.parseView(keys, accts, r.Responses)
			v.locked = locked
		}
		return err
	})
}

// try decides t on v and commits it. When a compare fails, it replaces v
// with what the transaction's Else branch read and returns not done.
func (kv *KV) try(op string, t store.Txn, keys []string, v *view) (map[string]*store.Entry, bool, error) {
	s := kv.s
	now := v.recs
	for i, c := range t.Conditions {
		h := now[c.Key]
		present := h.live(s)
		ok := (c.Absent && !present) || (c.Exists && present) || (c.Equals != nil && present && bytes.Equal(h.entry.Value, c.Equals))
		if !ok {
			if v.mixed {
				return nil, false, kv.reread(op, keys, v)
			}
			return nil, false, &store.ConditionError{Index: i, Condition: c}
		}
	}
	var reads map[string]*store.Entry
	if len(t.Reads) > 0 || op == "txn" {
		reads = map[string]*store.Entry{}
		for _, k := range t.Reads {
			if h := now[k]; h.live(s) {
				e := h.entry
				e.Value, e.Metadata = bytes.Clone(e.Value), bytes.Clone(e.Metadata)
				reads[k] = &e
			} else {
				reads[k] = nil
			}
		}
	}

	// The final state of each key, and what it does to the accounting:
	// deletes run before writes, as in bbolt's Apply.
	type final struct {
		put   bool
		entry store.Entry
	}
	finals := map[string]final{}
	delta := usage{}
	cur := func(k string) (store.Entry, bool) {
		if f, ok := finals[k]; ok {
			return f.entry, f.put
		}
		h := now[k]
		return h.entry, h.ok
	}
	for _, k := range t.Deletes {
		if e, ok := cur(k); ok {
			delta.add(e.Owner, kv.kind, -charge(k, e), -1)
		}
		finals[k] = final{}
	}
	for _, w := range t.Writes {
		if e, ok := cur(w.Key); ok {
			delta.add(e.Owner, kv.kind, -charge(w.Key, e), -1)
		}
		delta.add(w.Entry.Owner, kv.kind, charge(w.Key, w.Entry), 1)
		finals[w.Key] = final{put: true, entry: w.Entry}
	}

	cmps := make([]clientv3.Cmp, 0, len(keys)+2*len(delta))
	for _, k := range keys {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(kv.prefix+k), "=", now[k].rev))
	}
	var puts []clientv3.Op
	owners := delta.owners()
	var missing []string
	for _, o := range owners {
		if _, ok := v.accts[o]; !ok {
			missing = append(missing, o)
		}
	}
	if len(missing) > 0 {
		// At the current revision, not the records': a compaction between
		// the two reads cannot fail it, and the compares below hold both
		// to what was read. The Else branch reads them from now on.
		acct, err := s.readAccounts(op, missing)
		if err != nil {
			return nil, false, err
		}
		for o, a := range acct {
			v.accts[o] = a
		}
	}
	quotas := s.opts.Quotas()
	for _, o := range owners {
		a := v.accts[o]
		if qe := a.check(o, quotas, delta[o]); qe != nil {
			if v.mixed {
				return nil, false, kv.reread(op, keys, v)
			}
			s.m.refusal(kv.kind)
			return nil, false, qe
		}
		cmps = append(cmps,
			clientv3.Compare(clientv3.ModRevision(s.usageKey(o)), "=", a.usageRev),
			clientv3.Compare(clientv3.ModRevision(s.quotaKey(o)), "=", a.quotaRev))
		next := a.usage
		next.Add(*delta[o])
		puts = append(puts, s.putUsage(o, next))
	}
	// Ops by etcd key, since etcd refuses two ops on one key in a
	// transaction (an index entry removed and put again, say).
	ops := map[string]clientv3.Op{}
	names := make([]string, 0, len(finals))
	for k := range finals {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		f, dk := finals[k], kv.prefix+k
		if h := now[k]; h.ok && !h.entry.Expires.IsZero() {
			ik := s.indexKey(h.entry.Expires, dk)
			ops[ik] = clientv3.OpDelete(ik)
		}
		if !f.put {
			if now[k].rev != 0 {
				ops[dk] = clientv3.OpDelete(dk)
			}
			continue
		}
		ops[dk] = clientv3.OpPut(dk, string(encodeRecord(f.entry)))
		if !f.entry.Expires.IsZero() {
			ik := s.indexKey(f.entry.Expires, dk)
			ops[ik] = clientv3.OpPut(ik, "")
		}
	}
	for _, p := range puts {
		ops[string(p.KeyBytes())] = p
	}
	if len(ops) == 0 {
		// Nothing to change (a delete of an absent key, conditions and
		// reads only): the reads were one consistent view already, unless
		// some were handed on.
		if v.mixed {
			return nil, false, kv.reread(op, keys, v)
		}
		return reads, true, nil
	}
	then := make([]clientv3.Op, 0, len(ops))
	for _, k := range sortedKeys(ops) {
		then = append(then, ops[k])
	}
	// What the commit read, read again by the Else branch when a
	// compare fails: at the revision the compares failed at, as fresh as
	// a read of its own.
	accts := v.owners()
	var ok bool
	var rev int64
	err := s.call(op, func(ctx context.Context) error {
		r, err := s.cli.Txn(ctx).If(cmps...).Then(then...).Else(kv.readOps(keys, accts)...).Commit()
		if err != nil {
			return err
		}
		ok, rev = r.Succeeded, r.Header.Revision
		if !ok {
			locked := v.locked
			*v = kv.parseView(keys, accts, r.Responses)
			v.locked = locked
		}
		return nil
	})
	// The accounting and records as this commit left them, for the next
	// writer of its owners on this host; forgotten when the outcome is
	// unknown.
	var written map[string]held
	if err == nil && ok && len(v.locked) > 0 {
		written = make(map[string]held, len(finals))
		for k, f := range finals {
			if f.put && len(f.entry.Value)+len(f.entry.Metadata) <= cacheMaxValue {
				e := f.entry
				e.Value, e.Metadata = bytes.Clone(e.Value), bytes.Clone(e.Metadata)
				written[kv.prefix+k] = held{rev: rev, entry: e, ok: true}
			} else {
				written[kv.prefix+k] = held{}
			}
		}
	}
	for o := range v.locked {
		s.handRecords(o, written)
	}
	for _, o := range owners {
		if !v.locked[o] {
			continue // another's stripe: not this commit's to hand on
		}
		a := v.accts[o]
		if err != nil || !ok {
			s.hand(o, nil)
			continue
		}
		a.usage.Add(*delta[o])
		a.usageRev = rev
		if a.usage == (store.Amounts{}) {
			a.usageRev = 0 // deleted
		}
		s.hand(o, &a)
	}
	if err != nil {
		// The answer may have been lost after etcd applied it: the
		// cache must not keep what it may have replaced.
		s.cache.invalidate(prefixed(kv.prefix, names)...)
		return nil, false, err
	}
	if !ok {
		return nil, false, nil
	}
	// A writer that has its answer reads what it wrote on this host at
	// once, before the watch brings the change.
	s.cache.invalidate(prefixed(kv.prefix, names)...)
	return reads, true, nil
}

func prefixed(p string, keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = p + k
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var _ backend.KVSpaces = (*Store)(nil)

// ownerLocks serialise, per host, the commits that charge one owner
// (striped: owners that share a stripe take turns too).
type ownerLocks [64]ownerStripe

// ownerStripe is one stripe's lock and, guarded by it, the accounting of
// its owners as this host's last commit for each left it.
type ownerStripe struct {
	sync.Mutex
	handed  map[string]account
	records map[string]held // full key: what the last commits wrote
}

// maxHanded bounds the owners a stripe remembers the accounting of, and
// maxHandedRecords the records (each of cacheMaxValue or less; a larger
// one is read).
const (
	maxHanded        = 1024
	maxHandedRecords = 32
)

func stripe(owner string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(owner))
	return h.Sum32() % 64
}

// hand leaves a's accounting for the next commit charging owner (nil:
// none), with owner's stripe locked.
func (s *Store) hand(owner string, a *account) {
	st := &s.owners[stripe(owner)]
	if a == nil {
		delete(st.handed, owner)
		return
	}
	if st.handed == nil || len(st.handed) >= maxHanded {
		st.handed = map[string]account{}
	}
	st.handed[owner] = *a
}

// handRecords leaves the records a commit wrote (full keys; rev 0: deleted)
// for the next commit charging owner, with owner's stripe locked; nil
// forgets them all.
func (s *Store) handRecords(owner string, written map[string]held) {
	st := &s.owners[stripe(owner)]
	if written == nil {
		st.records = nil
		return
	}
	if st.records == nil || len(st.records) >= maxHandedRecords {
		st.records = map[string]held{}
	}
	for k, h := range written {
		if h.rev == 0 {
			delete(st.records, k)
		} else {
			st.records[k] = h
		}
	}
}

// takeHanded replaces, in v, the records and the accounting of the owners
// whose stripes the commit holds with what the last commits there left,
// where that is newer: each record, usage and overrides by its mod
// revision. A deleted key (revision 0) handed over loses to any read: the
// read's is at worst as old, and a compare that fails costs a retry, never
// a wrong write.
func (s *Store) takeHanded(kv *KV, v *view) {
	for o := range v.locked {
		for k, a := range v.recs {
			if h, ok := s.owners[stripe(o)].records[kv.prefix+k]; ok && h.rev > a.rev {
				v.recs[k], v.mixed = h, true
			}
		}
	}
	for o, a := range v.accts {
		h, ok := s.owners[stripe(o)].handed[o]
		if !ok {
			continue
		}
		if h.usageRev > a.usageRev {
			a.usage, a.usageRev, v.mixed = h.usage, h.usageRev, true
		}
		if h.quotaRev > a.quotaRev {
			a.overrides, a.quotaRev, v.mixed = h.overrides, h.quotaRev, true
		}
		v.accts[o] = a
	}
}

// lockOwners locks the stripes of the owners writes charge, in order, and
// returns the unlock.
func (s *Store) lockOwners(writes []store.Write) func() {
	var held [64]bool
	n := 0
	for _, w := range writes {
		if w.Entry.Owner == "" {
			continue
		}
		if i := stripe(w.Entry.Owner); !held[i] {
			held[i] = true
			n++
		}
	}
	if n == 0 {
		return func() {}
	}
	for i := range held {
		if held[i] {
			s.owners[i].Lock()
		}
	}
	return func() {
		for i := range held {
			if held[i] {
				s.owners[i].Unlock()
			}
		}
	}
}
