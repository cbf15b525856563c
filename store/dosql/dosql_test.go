package dosql

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTest(t testing.TB, o Options) *DB {
	t.Helper()
	o.Dir = t.TempDir()
	d, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

const id1, id2 = "0a1b", "ffee"

func mustExec(t testing.TB, d *DB, id, q string, args ...any) *Cursor {
	t.Helper()
	c, err := d.Exec("Counter", id, q, args...)
	if err != nil {
		t.Fatalf("Exec(%q): %v", q, err)
	}
	return c
}

func TestTablesAreCreatedFilledAndReadWithTheirCounts(t *testing.T) {
	d := openTest(t, Options{})
	c := mustExec(t, d, id1, "CREATE TABLE t(i INTEGER, r REAL, s TEXT, b BLOB, n, d DATETIME)")
	if c.RowsWritten != 0 || len(c.Rows) != 0 {
		t.Fatalf("create: %+v", c)
	}
	c = mustExec(t, d, id1, "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?), (2, 2.5, 'two', x'02', NULL, '2026-12-01 10:00:00')",
		int64(1), 1.5, "one", []byte{1}, nil, "2026-12-01 09:00:00")
	if c.RowsWritten != 2 || c.RowsRead != 0 {
		t.Fatalf("insert: written %d read %d, want 2 and 0", c.RowsWritten, c.RowsRead)
	}
	c = mustExec(t, d, id1, "SELECT i, r, s, b, n, d FROM t ORDER BY i")
	if want := []string{"i", "r", "s", "b", "n", "d"}; !reflect.DeepEqual(c.Columns, want) {
		t.Fatalf("columns %q", c.Columns)
	}
	want := [][]any{
		{int64(1), 1.5, "one", []byte{1}, nil, "2026-12-01 09:00:00+00:00"},
		{int64(2), 2.5, "two", []byte{2}, nil, "2026-12-01 10:00:00+00:00"},
	}
	if !reflect.DeepEqual(c.Rows, want) {
		t.Fatalf("rows %#v, want %#v", c.Rows, want)
	}
	if c.RowsRead != 2 || c.RowsWritten != 0 {
		t.Fatalf("select: read %d written %d", c.RowsRead, c.RowsWritten)
	}
	c = mustExec(t, d, id1, "UPDATE t SET n = 1; DELETE FROM t WHERE i = 2")
	if c.RowsWritten != 3 {
		t.Fatalf("update and delete: written %d, want 3", c.RowsWritten)
	}
	path, _ := d.Path("Counter", id1)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the database file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	// Another object is another database.
	if _, err := d.Exec("Counter", id2, "SELECT * FROM t"); err == nil || !strings.Contains(err.Error(), "no such table") {
		t.Fatalf("another object sees t: %v", err)
	}
}

func TestOneWantsExactlyOneRow(t *testing.T) {
	d := openTest(t, Options{})
	mustExec(t, d, id1, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)")
	tests := []struct {
		name    string
		query   string
		want    []any
		wantErr error
	}{
		{"one row", "SELECT x FROM t WHERE x = 1", []any{int64(1)}, nil},
		{"no row", "SELECT x FROM t WHERE x = 3", nil, ErrNoRows},
		{"two rows", "SELECT x FROM t", nil, ErrMultipleRows},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mustExec(t, d, id1, tc.query).One()
			if !errors.Is(err, tc.wantErr) || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("One = %v, %v; want %v, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestAnExecIsOneTransaction(t *testing.T) {
	d := openTest(t, Options{})
	mustExec(t, d, id1, "CREATE TABLE t(x UNIQUE)")
	tests := []struct {
		name  string
		query string
	}{
		{"a failing second statement undoes the first", "INSERT INTO t VALUES (1); INSERT INTO nosuch VALUES (1)"},
		{"a constraint failure undoes the rows before it", "INSERT INTO t VALUES (2); INSERT INTO t VALUES (3), (3)"},
		{"a nested BEGIN is refused", "INSERT INTO t VALUES (4); BEGIN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := d.Exec("Counter", id1, tc.query); err == nil {
				t.Fatal("no error")
			}
			if c := mustExec(t, d, id1, "SELECT count(*) FROM t"); c.Rows[0][0] != int64(0) {
				t.Fatalf("%v rows after the failed exec", c.Rows[0][0])
			}
		})
	}
}

func TestTheSizeCapRefusesWritesAndKeepsTheData(t *testing.T) {
	d := openTest(t, Options{MaxBytes: 64 << 10})
	mustExec(t, d, id1, "CREATE TABLE t(b BLOB)")
	var err error
	n := 0
	for ; n < 100; n++ {
		if _, err = d.Exec("Counter", id1, "INSERT INTO t VALUES (?)", make([]byte, 4000)); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrDatabaseFull) {
		t.Fatalf("after %d rows: %v, want ErrDatabaseFull", n, err)
	}
	if !strings.Contains(err.Error(), "limit of 65536 bytes") {
		t.Fatalf("message %q does not name the limit", err)
	}
	if n == 0 || n > 16 {
		t.Fatalf("%d rows of 4000 bytes fit under 64 KiB", n)
	}
	if c := mustExec(t, d, id1, "SELECT count(*) FROM t"); c.Rows[0][0] != int64(n) {
		t.Fatalf("%v rows after the refusal, want %d", c.Rows[0][0], n)
	}
	// Deleting makes room again.
	mustExec(t, d, id1, "DELETE FROM t")
	mustExec(t, d, id1, "INSERT INTO t VALUES (?)", make([]byte, 4000))
}

func TestClassesAndIDsAreValidatedBeforeTheyBecomePaths(t *testing.T) {
	d := openTest(t, Options{})
	tests := []struct {
		class, id string
		wantErr   error
	}{
		{"Counter", "abc123", nil},
		{"My_Class2", "0", nil},
		{"../etc", "ab", ErrInvalidClass},
		{"2nd", "ab", ErrInvalidClass},
		{"", "ab", ErrInvalidClass},
		{"C", "", ErrInvalidID},
		{"C", "../x", ErrInvalidID},
		{"C", "ABCD", ErrInvalidID},
		{"C", strings.Repeat("a", 129), ErrInvalidID},
	}
	for _, tc := range tests {
		t.Run(tc.class+"/"+tc.id, func(t *testing.T) {
			_, err := d.Exec(tc.class, tc.id, "SELECT 1")
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Exec = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestRemoveDeletesTheFiles(t *testing.T) {
	d := openTest(t, Options{})
	mustExec(t, d, id1, "CREATE TABLE t(x); INSERT INTO t VALUES (1)")
	mustExec(t, d, id2, "CREATE TABLE t(x); INSERT INTO t VALUES (2)")
	path, _ := d.Path("Counter", id1)
	if err := d.Remove("Counter", id1); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Remove: %v", path+suffix, err)
		}
	}
	if err := d.Remove("Counter", id1); err != nil {
		t.Fatalf("removing again: %v", err)
	}
	if c := mustExec(t, d, id2, "SELECT x FROM t"); c.Rows[0][0] != int64(2) {
		t.Fatalf("the other object: %v", c.Rows)
	}
	if _, err := d.Exec("Counter", id1, "SELECT x FROM t"); err == nil {
		t.Fatal("the removed object still has its table")
	}
}

func TestDatabasesAreClosedWhenIdleOrOverTheBound(t *testing.T) {
	d := openTest(t, Options{MaxOpen: 2, IdleTimeout: 50 * time.Millisecond})
	for i := range 4 {
		mustExec(t, d, fmt.Sprintf("%02x", i), "CREATE TABLE t(x); INSERT INTO t VALUES (?)", i)
		if n := d.OpenCount(); n > 2 {
			t.Fatalf("%d open, bound 2", n)
		}
	}
	// A closed database opens again with its data.
	if c := mustExec(t, d, "00", "SELECT x FROM t"); c.Rows[0][0] != int64(0) {
		t.Fatalf("reopened: %v", c.Rows)
	}
	deadline := time.Now().Add(5 * time.Second)
	for d.OpenCount() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d still open after the idle timeout", d.OpenCount())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two objects in parallel, each from several goroutines that take the
// object's lock as a worker's input gate does, with a small bound so that
// eviction runs under the calls: no increment is lost.
func TestObjectsRunInParallelAndOneObjectsCallsInTurn(t *testing.T) {
	d := openTest(t, Options{MaxOpen: 1})
	ids := []string{id1, id2}
	locks := []sync.Mutex{{}, {}}
	for _, id := range ids {
		mustExec(t, d, id, "CREATE TABLE c(n INTEGER); INSERT INTO c VALUES (0)")
	}
	const workers, rounds = 6, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*len(ids))
	for i, id := range ids {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					locks[i].Lock()
					c, err := d.Exec("Counter", id, "SELECT n FROM c")
					if err == nil {
						_, err = d.Exec("Counter", id, "UPDATE c SET n = ?", c.Rows[0][0].(int64)+1)
					}
					locks[i].Unlock()
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, id := range ids {
		if c := mustExec(t, d, id, "SELECT n FROM c"); c.Rows[0][0] != int64(workers*rounds) {
			t.Fatalf("object %s counted %v, want %d", id, c.Rows[0][0], workers*rounds)
		}
	}
}

func BenchmarkInsertSelect(b *testing.B) {
	d := openTest(b, Options{})
	mustExec(b, d, id1, "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		mustExec(b, d, id1, "INSERT INTO t VALUES (?, ?)", i, "value")
		if c := mustExec(b, d, id1, "SELECT v FROM t WHERE k = ?", i); len(c.Rows) != 1 {
			b.Fatal(c.Rows)
		}
	}
}

func TestAQueryCannotReachOutsideItsDatabaseOrLiftItsLimits(t *testing.T) {
	d := openTest(t, Options{})
	mustExec(t, d, id1, "CREATE TABLE t(x)")
	outside := t.TempDir() + "/outside.db"
	many := strings.TrimSuffix(strings.Repeat("?,", 101), ",")
	tests := []struct {
		name    string
		query   string
		args    []any
		allowed bool
	}{
		{"ATTACH is refused", fmt.Sprintf("ATTACH DATABASE '%s' AS x", outside), nil, false},
		{"VACUUM INTO is refused", fmt.Sprintf("VACUUM INTO '%s'", outside), nil, false},
		{"raising max_page_count is refused", "PRAGMA max_page_count = 1000000000", nil, false},
		{"changing the journal is refused", "PRAGMA journal_mode = OFF", nil, false},
		{"COMMIT inside the query is refused", "INSERT INTO t VALUES (1); COMMIT; INSERT INTO t VALUES (2)", nil, false},
		{"load_extension is refused", "SELECT load_extension('x')", nil, false},
		{"101 bound parameters are refused", "SELECT " + many, make([]any, 101), false},
		{"a statement over 100 KB is refused", "SELECT '" + strings.Repeat("x", 100_000) + "'", nil, false},
		{"table_info is allowed", "PRAGMA table_info(t)", nil, true},
		{"foreign_keys is allowed", "PRAGMA foreign_keys = ON", nil, true},
		{"100 bound parameters are allowed", "SELECT " + strings.TrimSuffix(strings.Repeat("?,", 100), ","), make([]any, 100), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.Exec("Counter", id1, tc.query, tc.args...)
			t.Logf("Exec: %v", err)
			if tc.allowed != (err == nil) {
				t.Fatalf("Exec: %v, allowed %v", err, tc.allowed)
			}
			if _, err := os.Stat(outside); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a file outside the database: %v", err)
			}
			if c := mustExec(t, d, id1, "SELECT count(*) FROM t"); c.Rows[0][0] != int64(0) {
				t.Fatalf("%v rows in t", c.Rows[0][0])
			}
		})
	}
}
