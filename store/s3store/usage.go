package s3store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sort"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// Accounting of S3-held blobs (docs/stores.md, "S3 blobs", says it for
// operators).
//
// S3 cannot change an object and a counter in one step, so the usage of
// each owner is kept in a ledger beside the store: one record per sandbox
// in a KV space of the engine that keeps the operator's other accounting
// (bbolt on one host; etcd, fleet-wide, when KV and state are there). A
// record holds the bytes and objects charged to the sandbox and the
// operations in flight that touch them ("pending", each with a lease).
// Every change of a record is a transaction conditional on the record as
// read, so concurrent writers, on one host or many, cannot both take the
// last of a quota.
//
// A write reserves its size before any of it is committed (the announced
// size, or as the body streams in, part by part), refused with the same
// *store.QuotaError as the bbolt store's; the commit is conditional on
// the object it replaces, whose owner is marked pending too; after the
// commit the real change is settled (the new size less the reservation,
// the old object given back to its owner). A delete marks the owner,
// deletes conditionally, and gives the object back. So a crash between
// the S3 call and the settling leaves an owner charged for more than it
// holds, never less, until the lease runs out and `store --check`
// recounts it (reconcile).

// ledgerScope is the ledger's scope: no handler makes a scope of this
// form (they make "shared" or "sandbox:NAME"), so no sandbox reaches it.
// It names the object store and prefix, so fleets that share the engine
// and not the bucket keep apart.
func ledgerScope(s *Store) string {
	return "s3usage:" + url.PathEscape(s.where) + "/" + url.PathEscape(s.prefix)
}

// LedgerNamespace is the KV namespace of the ledger.
const LedgerNamespace = "interceptd.s3"

// leaseSlack is added to a pending operation's lease before reconcile
// takes it for dead: room for clocks of a fleet that disagree.
const leaseSlack = time.Minute

// ledgerRecord is one sandbox's record. Bytes and Objects include what
// the pending operations reserved.
//
// Rev counts the record's changes, so that no two of its values are the
// same: reconcile's "unchanged during the recount" must not be fooled by
// a write and a delete that cancel out. For the same reason only
// reconcile deletes a record.
type ledgerRecord struct {
	Rev     int64     `json:"rev"`
	Bytes   int64     `json:"bytes"`
	Objects int64     `json:"objects"`
	Pending []pending `json:"pending,omitempty"`
}

type pending struct {
	ID      string `json:"id"`
	Bytes   int64  `json:"bytes,omitempty"`
	Objects int64  `json:"objects,omitempty"`
	Until   int64  `json:"until"` // unix seconds
}

func (r *ledgerRecord) find(id string) int {
	for i, p := range r.Pending {
		if p.ID == id {
			return i
		}
	}
	return -1
}

// live says whether an operation of the record may still be in flight.
func (r *ledgerRecord) live(now time.Time) bool {
	for _, p := range r.Pending {
		if now.Before(time.Unix(p.Until, 0).Add(leaseSlack)) {
			return true
		}
	}
	return false
}

// accounting is the ledger of one Store (Account).
type accounting struct {
	ledger backend.KV
	// limit returns a sandbox's blob quota and the blob usage charged to
	// it elsewhere (objects the bbolt store still holds): a write is held
	// to the quota less both.
	limit func(sandbox string) (quota, elsewhere store.Amount, err error)
	now   func() time.Time
}

// Account charges the blobs of s to their owners from now on, in a ledger
// in spaces (the KV space LedgerNamespace, in a scope no handler makes),
// held to the blob quotas op gives; Operator's Usage adds them to op's.
// Call it before s is used. Without it, S3-held blobs are charged to no
// one.
func (s *Store) Account(spaces backend.KVSpaces, op backend.Operator) {
	s.acct = &accounting{
		ledger: spaces.Keys(store.KindKV, LedgerNamespace, ledgerScope(s), store.Limits{}),
		limit: func(sb string) (store.Amount, store.Amount, error) {
			q, err := op.Quota(sb)
			if err != nil {
				return store.Amount{}, store.Amount{}, err
			}
			u, err := op.Usage(sb)
			return q.Blob, u.Blob, err
		},
		now: time.Now,
	}
}

// read returns the records of owners and their raw values (nil: none).
// Plain reads, which a cache may serve a little late: every change is
// conditional on what was read, so a late read costs a retry, never a
// wrong count (and bbolt's Apply would commit, and sync, even to read).
func (a *accounting) read(owners []string) (map[string]*ledgerRecord, map[string][]byte, error) {
	recs, raws := map[string]*ledgerRecord{}, map[string][]byte{}
	for _, o := range owners {
		r := &ledgerRecord{}
		e, err := a.ledger.Get(o)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, nil, fmt.Errorf("reading the s3 blob usage of sandbox %s: %w", o, err)
		default:
			if err := json.Unmarshal(e.Value, r); err != nil {
				return nil, nil, fmt.Errorf("the s3 blob usage of sandbox %s: %w", o, err)
			}
			raws[o] = bytes.Clone(e.Value)
		}
		recs[o] = r
	}
	return recs, raws, nil
}

// update changes the records of owners with f, in one transaction
// conditional on the records as read, reading again when another writer
// got there first. f's error (a quota refused) is returned as it is.
func (a *accounting) update(owners []string, f func(recs map[string]*ledgerRecord) error) error {
	sort.Strings(owners)
	for attempt := 0; attempt < 100; attempt++ {
		recs, raws, err := a.read(owners)
		if err != nil {
			return err
		}
		if err := f(recs); err != nil {
			return err
		}
		var t store.Txn
		for _, o := range owners {
			if raws[o] != nil {
				t.Conditions = append(t.Conditions, store.Condition{Key: o, Equals: raws[o]})
			} else {
				t.Conditions = append(t.Conditions, store.Condition{Key: o, Absent: true})
			}
			r := recs[o]
			r.Rev++
			v, _ := json.Marshal(r)
			t.Writes = append(t.Writes, store.Write{Key: o, Entry: store.Entry{Value: v}})
		}
		_, err = a.ledger.Apply(t)
		if errors.Is(err, store.ErrConditionFailed) {
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("charging s3 blob usage: %w", err)
		}
		return nil
	}
	return fmt.Errorf("%w: the s3 blob usage of %v kept changing", store.ErrUnavailable, owners)
}

// hold is one operation's part in the ledger: what it reserved of each
// owner it touches (each has a pending entry under id).
type hold struct {
	a      *accounting
	id     string
	lease  time.Duration
	last   time.Time // of the last renewal
	owners map[string]*store.Amount
}

// due says whether half the lease has gone since it was last renewed.
func (h *hold) due() bool { return h.a.now().Sub(h.last) > h.lease/2 }

func (a *accounting) start(lease time.Duration) *hold {
	if a == nil {
		return nil
	}
	return &hold{a: a, id: randomID(), lease: lease, owners: map[string]*store.Amount{}}
}

// reserve takes add more of owner's quota for the operation (nothing
// when it adds nothing; a *store.QuotaError when it would pass the
// quota) and renews the lease; what a recount wiped meanwhile is taken
// again. A hold of no accounting reserves nothing.
func (h *hold) reserve(owner string, add store.Amount) error {
	if h == nil || owner == "" {
		return nil
	}
	var quota, elsewhere store.Amount
	if add.Bytes > 0 || add.Keys > 0 {
		var err error
		if quota, elsewhere, err = h.a.limit(owner); err != nil {
			return err
		}
	}
	now := h.a.now()
	until := now.Add(h.lease).Unix()
	err := h.a.update([]string{owner}, func(recs map[string]*ledgerRecord) error {
		r := recs[owner]
		if r.find(h.id) < 0 && h.owners[owner] != nil {
			return errRecounted
		}
		usage := store.Amount{Bytes: r.Bytes + elsewhere.Bytes, Keys: r.Objects + elsewhere.Keys}
		if add.Bytes > 0 && quota.Bytes > 0 && usage.Bytes+add.Bytes > quota.Bytes {
			return &store.QuotaError{Sandbox: owner, Kind: store.KindBlob, Limit: "bytes", Quota: quota.Bytes, Usage: usage.Bytes, Write: add.Bytes}
		}
		if add.Keys > 0 && quota.Keys > 0 && usage.Keys+add.Keys > quota.Keys {
			return &store.QuotaError{Sandbox: owner, Kind: store.KindBlob, Limit: "keys", Quota: quota.Keys, Usage: usage.Keys, Write: add.Keys}
		}
		r.Bytes += add.Bytes
		r.Objects += add.Keys
		i := r.find(h.id)
		if i < 0 {
			r.Pending = append(r.Pending, pending{ID: h.id})
			i = len(r.Pending) - 1
		}
		p := &r.Pending[i]
		p.Bytes += add.Bytes
		p.Objects += add.Keys
		p.Until = until
		return nil
	})
	if errors.Is(err, errRecounted) {
		// A recount took the operation for dead (a body slower than its
		// lease) and charged the owner only for what was committed: hold
		// what it held again, against the quota, or the commit would
		// settle against a reservation no longer there.
		held := *h.owners[owner]
		delete(h.owners, owner)
		return h.reserve(owner, store.Amount{Bytes: max(held.Bytes+add.Bytes, 0), Keys: max(held.Keys+add.Keys, 0)})
	}
	if err != nil {
		return err
	}
	h.last = now
	a := h.owners[owner]
	if a == nil {
		a = &store.Amount{}
		h.owners[owner] = a
	}
	a.Bytes += add.Bytes
	a.Keys += add.Keys
	return nil
}

// errRecounted is what reserve's transaction returns when the
// operation's pending entry is gone from a record it reserved in: a
// recount (Reconcile) took it for dead once its lease had run out.
var errRecounted = errors.New("the reservation was recounted")

// mark makes owner's record show the operation in flight (an object of
// its is about to be replaced or deleted), so that reconcile leaves it
// alone until end.
func (h *hold) mark(owner string) error {
	if h == nil || owner == "" || h.owners[owner] != nil {
		return nil
	}
	return h.reserve(owner, store.Amount{})
}

// reserved is what the operation holds of owner.
func (h *hold) reserved(owner string) store.Amount {
	if h == nil || h.owners[owner] == nil {
		return store.Amount{}
	}
	return *h.owners[owner]
}

// end settles the operation: each owner's record loses its pending entry
// and changes by adjust[owner] (relative to what is reserved: a commit
// that failed gives back its reservation with adjust = -reserved); a
// reservation a recount wiped (its lease ran out) is not given back
// again. A ledger that cannot be reached leaves the reservation to be
// recounted; it is logged, not returned, since the object store has
// already changed.
func (h *hold) end(adjust map[string]store.Amount) {
	if h == nil {
		return
	}
	owners := make([]string, 0, len(h.owners)+len(adjust))
	for o := range h.owners {
		owners = append(owners, o)
	}
	for o, d := range adjust {
		if _, ok := h.owners[o]; !ok && o != "" && d != (store.Amount{}) {
			owners = append(owners, o)
		}
	}
	if len(owners) == 0 {
		return
	}
	err := h.a.update(owners, func(recs map[string]*ledgerRecord) error {
		for _, o := range owners {
			r := recs[o]
			d := adjust[o]
			if i := r.find(h.id); i >= 0 {
				r.Pending = append(r.Pending[:i], r.Pending[i+1:]...)
			} else if held := h.owners[o]; held != nil {
				// A recount took the operation for dead and wiped
				// what it held: the change is from nothing held.
				d.Bytes += held.Bytes
				d.Keys += held.Keys
			}
			r.Bytes += d.Bytes
			r.Objects += d.Keys
		}
		return nil
	})
	if err != nil {
		slog.Warn("s3 store: could not settle blob usage; `interceptd store --check` recounts it once the lease has run out",
			"owners", owners, "adjust", adjust, "err", err)
	}
}

// usage returns the blob usage the ledger charges to sandbox.
func (a *accounting) usage(sandbox string) (store.Amount, error) {
	recs, _, err := a.read([]string{sandbox})
	if err != nil {
		return store.Amount{}, err
	}
	return store.Amount{Bytes: recs[sandbox].Bytes, Keys: recs[sandbox].Objects}, nil
}

// settled is the usage of the record without what its operations in
// flight reserved: what the objects that the ledger knows to be committed
// occupy.
func (r *ledgerRecord) settled() store.Amount {
	a := store.Amount{Bytes: r.Bytes, Keys: r.Objects}
	for _, p := range r.Pending {
		a.Bytes -= p.Bytes
		a.Keys -= p.Objects
	}
	return store.Amount{Bytes: max(a.Bytes, 0), Keys: max(a.Keys, 0)}
}

// AllUsage returns the settled blob usage the ledger charges to every
// sandbox that has a record in it (as store.Amounts with only Blob set):
// one listing of the ledger's space and a read of each record, in the
// engine that keeps the ledger (bbolt or etcd; S3 is not asked). Nil
// without Account.
//
// Settled, unlike the quota check and `sandbox show` (which count what
// is reserved too, so that no write passes the quota): a reservation is
// a bound, not what is stored. An upload that announces 5 GiB reserves
// 5 GiB before a byte of it arrives and gives it all back if it is
// refused or fails, so the series would jump at every attempt. A
// reservation that a crash left (between an S3 commit and its settling)
// is counted once `store --check` recounts it.
func (s *Store) AllUsage() (map[string]store.Amounts, error) {
	a := s.acct
	if a == nil {
		return nil, nil
	}
	out := map[string]store.Amounts{}
	for cursor := ""; ; {
		page, err := a.ledger.List(store.ListOptions{Cursor: cursor})
		if err != nil {
			return nil, fmt.Errorf("listing the s3 blob usage: %w", err)
		}
		names := make([]string, 0, len(page.Keys))
		for _, k := range page.Keys {
			names = append(names, k.Name)
		}
		recs, _, err := a.read(names)
		if err != nil {
			return nil, err
		}
		for o, r := range recs {
			out[o] = store.Amounts{Blob: r.settled()}
		}
		if page.ListComplete || page.Cursor == "" {
			return out, nil
		}
		cursor = page.Cursor
	}
}

// UsageCache returns a cache of AllUsage that reads the ledger again once
// what it holds is older than refresh, for the usage series.
func (s *Store) UsageCache(refresh time.Duration) *store.UsageCache {
	return store.NewUsageCache(refresh, s.AllUsage)
}

// charge is what an object occupies, as the bbolt store counts it: its
// key, content and stored headers.
func charge(key string, size int64, http, custom map[string]string) int64 {
	n := int64(len(key)) + size
	for _, m := range []map[string]string{http, custom} {
		for k, v := range m {
			n += int64(len(k) + len(v))
		}
	}
	return n
}

func chargeOf(oi *store.ObjectInfo) int64 { return charge(oi.Key, oi.Size, oi.HTTP, oi.Custom) }
