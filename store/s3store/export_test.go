package s3store

import (
	"time"

	"github.com/interceptd/interceptd/store"
)

// SetClock replaces the accounting's clock (Account first).
func (s *Store) SetClock(now func() time.Time) { s.acct.now = now }

// Crash reserves a for owner under a lease and never settles it: what a
// daemon that died between a reservation and its commit leaves.
func (s *Store) Crash(owner string, a store.Amount, lease time.Duration) error {
	return s.acct.start(lease).reserve(owner, a)
}
