package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrLocked is returned by Compact when another process (a running daemon)
// has the store open.
var ErrLocked = errors.New("the store is open in another process")

// CompactResult says what Compact did.
type CompactResult struct {
	Path   string `json:"path"`
	Before int64  `json:"before_bytes"`
	After  int64  `json:"after_bytes"`
}

// compactTxSize bounds the data one transaction of the copy holds.
const compactTxSize = 64 << 20

// Compact gives back to the filesystem the space that deleted data left in
// the store in dir. bbolt reuses freed pages but never shrinks its file;
// Compact copies the live data into a new file, checks it, and renames it
// over the old one, so at every moment the path holds a whole store: a
// crash leaves the old file (and a stray .compact file that the next
// Compact replaces).
//
// It needs the store to itself: while a daemon has it open it returns
// ErrLocked at once, and a daemon that starts meanwhile waits for it (and
// then opens the new file, see Open).
func Compact(dir string) (CompactResult, error) {
	path := filepath.Join(dir, FileName)
	res := CompactResult{Path: path}
	fi, err := os.Stat(path)
	if err != nil {
		return res, fmt.Errorf("compacting: %w", err)
	}
	res.Before = fi.Size()
	src, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond})
	if errors.Is(err, bolt.ErrTimeout) {
		return res, fmt.Errorf("%w (%s): stop interceptd serve first", ErrLocked, path)
	}
	if err != nil {
		return res, fmt.Errorf("opening %s: %w", path, err)
	}
	// Held until the new file has replaced this one.
	defer src.Close()
	tmp := path + ".compact"
	os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, nil)
	if err != nil {
		return res, fmt.Errorf("creating %s: %w", tmp, err)
	}
	err = bolt.Compact(dst, src, compactTxSize)
	if err == nil {
		err = dst.View(func(tx *bolt.Tx) error {
			for cerr := range tx.Check() {
				return fmt.Errorf("the compacted copy fails bbolt's check: %w", cerr)
			}
			return nil
		})
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncFile(tmp)
	}
	if err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("compacting %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return res, fmt.Errorf("replacing %s: %w", path, err)
	}
	if err := syncFile(dir); err != nil {
		return res, fmt.Errorf("syncing %s: %w", dir, err)
	}
	if fi, err := os.Stat(path); err == nil {
		res.After = fi.Size()
	}
	return res, nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
