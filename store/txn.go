package store

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Condition is one compare of a transaction. Exactly one of Equals, Absent
// and Exists is set.
type Condition struct {
	Key string
	// Equals holds when the key exists with exactly this value.
	Equals []byte
	// Absent holds when the key does not exist (or has expired).
	Absent bool
	// Exists holds when the key exists, whatever its value.
	Exists bool
}

func (c Condition) String() string {
	switch {
	case c.Absent:
		return fmt.Sprintf("%q is absent", c.Key)
	case c.Exists:
		return fmt.Sprintf("%q exists", c.Key)
	default:
		return fmt.Sprintf("%q equals the given value", c.Key)
	}
}

// Write is one put of a transaction.
type Write struct {
	Key   string
	Entry Entry
}

// Txn is an atomic multi-key transaction: if every condition holds, the
// reads are taken and the writes and deletes applied, all in one commit;
// otherwise nothing is written.
type Txn struct {
	Conditions []Condition
	// Reads are returned as they were before the transaction's writes.
	Reads   []string
	Writes  []Write
	Deletes []string
}

// ConditionError says which condition of a transaction failed.
type ConditionError struct {
	Index     int
	Condition Condition
}

func (e *ConditionError) Error() string {
	return fmt.Sprintf("condition %d failed: %s", e.Index, e.Condition)
}

func (e *ConditionError) Is(target error) bool { return target == ErrConditionFailed }

// Check checks t's shape, the same for every engine: it touches 1 to
// MaxTxnOps keys, each condition sets exactly one test, and checkKey takes
// every key read, tested or deleted (writes are checked with their entries).
func (t Txn) Check(checkKey func(string) error) error {
	if n := len(t.Conditions) + len(t.Reads) + len(t.Writes) + len(t.Deletes); n == 0 {
		return errors.New("empty transaction")
	} else if n > MaxTxnOps {
		return fmt.Errorf("transaction touches %d keys, limit %d", n, MaxTxnOps)
	}
	for i, c := range t.Conditions {
		set := 0
		for _, b := range []bool{c.Equals != nil, c.Absent, c.Exists} {
			if b {
				set++
			}
		}
		if set != 1 {
			return fmt.Errorf("condition %d: set exactly one of equals, absent, exists", i)
		}
		if err := checkKey(c.Key); err != nil {
			return fmt.Errorf("condition %d: %w", i, err)
		}
	}
	for _, k := range append(append([]string{}, t.Reads...), t.Deletes...) {
		if err := checkKey(k); err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
	}
	return nil
}

// MaxTxnOps bounds the number of keys one transaction may touch.
const MaxTxnOps = 128

// Apply runs t atomically. It returns the entries read (nil for an absent
// key), or a *ConditionError (errors.Is ErrConditionFailed) or a
// *QuotaError (errors.Is ErrQuotaExceeded) and no writes.
func (kv *KV) Apply(t Txn) (reads map[string]*Entry, err error) {
	defer func(s time.Time) { kv.db.observe(kv.kind, "txn", s, err) }(time.Now())
	if err := t.Check(kv.CheckKey); err != nil {
		return nil, err
	}
	for _, w := range t.Writes {
		if err := kv.checkEntry(w.Key, w.Entry); err != nil {
			return nil, fmt.Errorf("write %q: %w", w.Key, err)
		}
	}
	if len(t.Writes) > 0 {
		var need int64
		for _, w := range t.Writes {
			need += entryCharge(w.Key, w.Entry)
		}
		if err := kv.db.checkSpace(need); err != nil {
			return nil, err
		}
	}
	var failed *ConditionError
	var qerr *QuotaError
	err = kv.db.update(func(tx *bolt.Tx) error {
		// This may run twice (see update): start from a clean slate.
		failed, qerr, reads = nil, nil, map[string]*Entry{}
		for i, c := range t.Conditions {
			e, err := kv.get(tx, c.Key)
			present := err == nil
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			ok := (c.Absent && !present) || (c.Exists && present) || (c.Equals != nil && present && bytes.Equal(e.Value, c.Equals))
			if !ok {
				failed = &ConditionError{Index: i, Condition: c}
				return nil
			}
		}
		for _, k := range t.Reads {
			e, err := kv.get(tx, k)
			switch {
			case err == nil:
				reads[k] = &e
			case errors.Is(err, ErrNotFound):
				reads[k] = nil
			default:
				return err
			}
		}
		// Charged before anything is written: a refusal writes nothing.
		var err error
		if qerr, err = kv.db.charge(tx, kv.plan(tx, t.Deletes, t.Writes)); err != nil || qerr != nil {
			return err
		}
		for _, k := range t.Deletes {
			if err := kv.delete(tx, k); err != nil {
				return err
			}
		}
		for _, w := range t.Writes {
			if err := kv.put(tx, w.Key, w.Entry); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if failed != nil {
		return nil, failed
	}
	if qerr != nil {
		return nil, qerr
	}
	return reads, nil
}
