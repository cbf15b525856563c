// Package dosql keeps one SQLite database per Durable Object: the storage
// behind a worker's `state.storage.sql.exec`. The databases live beside the
// bbolt store, one file each:
//
//	<Options.Dir>/<class>/<id>.sqlite   (and -wal, -shm while it is open)
//
// A database is opened on its first Exec and closed again when it has been
// idle for Options.IdleTimeout or when more than Options.MaxOpen are open
// (the least recently used idle one goes first), so a host with many objects
// holds file descriptors and page caches only for the busy ones.
//
// SQLite comes from modernc.org/sqlite: SQLite translated to Go, so the
// daemon stays one static binary without cgo. (ncruces/go-sqlite3, the other
// pure-Go choice, runs SQLite compiled to WebAssembly in the wazero runtime:
// a second engine in the process, and a compile of the module at start.)
//
// Calls to one object run one at a time (a per-database lock; the worker
// serialises an object's calls anyway, as Durable Objects do); calls to
// different objects run in parallel. DB is safe for concurrent use.
package dosql

import (
	"container/list"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var (
	// ErrInvalidClass is returned for a class name that is not an
	// identifier of letters, digits and underscores (see CheckClass).
	ErrInvalidClass = errors.New("invalid durable object class")
	// ErrInvalidID is returned for an object id that is not lowercase hex
	// (see CheckID).
	ErrInvalidID = errors.New("invalid durable object id")
	// ErrDatabaseFull is returned when a write would take an object's
	// database past Options.MaxBytes. The Exec that hit it is rolled back.
	ErrDatabaseFull = errors.New("SQLITE_FULL")
	// ErrNoRows is returned by Cursor.One when the query returned no row.
	ErrNoRows = errors.New("expected exactly one result from SQL query, but got no results")
	// ErrMultipleRows is returned by Cursor.One when the query returned
	// more than one row.
	ErrMultipleRows = errors.New("expected exactly one result from SQL query, but got multiple results")
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("dosql closed")
)

// DefaultMaxBytes is the default size cap of one object's database: 10 GiB,
// Cloudflare's 10 GB "Storage per Durable Object" for SQLite-backed classes
// (https://developers.cloudflare.com/durable-objects/platform/limits/).
const DefaultMaxBytes = 10 << 30

// Options configures Open. Zero fields take the defaults.
type Options struct {
	// Dir holds the databases, one directory per class. Required.
	Dir string
	// MaxOpen bounds the databases open at once. Default 64. More may be
	// open for a moment when every open one is in use.
	MaxOpen int
	// IdleTimeout closes a database nobody has used for this long.
	// Default 1 minute.
	IdleTimeout time.Duration
	// MaxBytes caps each database's size (SQLite's max_page_count; the
	// write-ahead log is not counted until it is checkpointed). Default
	// DefaultMaxBytes.
	MaxBytes int64
}

func (o Options) withDefaults() Options {
	if o.MaxOpen <= 0 {
		o.MaxOpen = 64
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = time.Minute
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	return o
}

// pageSize is SQLite's default page size, which max_page_count counts in.
const pageSize = 4096

var (
	classRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	idRE    = regexp.MustCompile(`^[0-9a-f]{1,128}$`)
)

// CheckClass validates a class name: an identifier of ASCII letters, digits
// and underscores, at most 128 bytes. It becomes a directory name, so
// nothing that could climb out of Dir gets through.
func CheckClass(class string) error {
	if !classRE.MatchString(class) {
		return fmt.Errorf("%w %q: want letters, digits and underscores, not starting with a digit, at most 128", ErrInvalidClass, clip(class))
	}
	return nil
}

// CheckID validates an object id: 1 to 128 lowercase hex digits.
func CheckID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%w %q: want 1 to 128 lowercase hex digits", ErrInvalidID, clip(id))
	}
	return nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// DB is the set of per-object databases under one directory.
type DB struct {
	opts Options

	mu     sync.Mutex // guards open, lru, closed
	open   map[string]*handle
	lru    *list.List // of *handle, most recently used first
	closed bool

	stop chan struct{}
	done chan struct{}
}

// handle is one open database. Its mutex serialises the calls to the object
// and guards its fields; eviction takes it with TryLock, so a database in
// use is never closed under its caller.
type handle struct {
	mu   sync.Mutex
	key  string // class/id
	path string
	db   *sql.DB
	// conn is the one connection, made on the first Exec and kept: the
	// limits and the authorizer are set on it, so no query may run on a
	// connection the pool made without them.
	conn *sql.Conn
	// inQuery is set while the caller's query is prepared and run, for
	// the authorizer (see authorize).
	inQuery  bool
	closed   bool
	lastUsed time.Time
	elem     *list.Element
}

// Open prepares the databases under opts.Dir. Nothing is opened until an
// object's first Exec.
func Open(opts Options) (*DB, error) {
	o := opts.withDefaults()
	if o.Dir == "" {
		return nil, errors.New("dosql: no directory")
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", o.Dir, err)
	}
	d := &DB{opts: o, open: map[string]*handle{}, lru: list.New(), stop: make(chan struct{}), done: make(chan struct{})}
	go d.janitor()
	return d, nil
}

// Path returns the file of an object's database (whether or not it exists).
func (d *DB) Path(class, id string) (string, error) {
	if err := CheckClass(class); err != nil {
		return "", err
	}
	if err := CheckID(id); err != nil {
		return "", err
	}
	return filepath.Join(d.opts.Dir, class, id+".sqlite"), nil
}

// Cursor is the whole result of an Exec: the columns and rows of the last
// statement of the query, and what the query read and wrote.
type Cursor struct {
	Columns []string
	// Rows hold int64, float64, string, []byte or nil per column, as
	// SQLite stored them. (Text in a column declared DATE, DATETIME or
	// TIMESTAMP comes back in the driver's time format, see Exec.)
	Rows [][]any
	// RowsRead counts the rows the query returned. It is not Cloudflare's
	// rowsRead, which counts the rows SQLite scanned: the driver does not
	// expose that per query.
	RowsRead int64
	// RowsWritten counts the rows the query inserted, updated or deleted,
	// triggers included (the change of SQLite's total_changes()).
	RowsWritten int64
}

// One returns the only row, or ErrNoRows or ErrMultipleRows: Cloudflare's
// cursor.one(), which throws unless the query returned exactly one row.
func (c *Cursor) One() ([]any, error) {
	switch len(c.Rows) {
	case 0:
		return nil, ErrNoRows
	case 1:
		return c.Rows[0], nil
	}
	return nil, ErrMultipleRows
}

// Exec runs query, which may hold several statements separated by
// semicolons, on the object's database, creating the database if need be.
// Args are bound to the ? (or ?NNN, :name) placeholders of each statement
// that has them; values are nil, int64 (and the other integer kinds),
// float64, bool, string and []byte.
//
// The whole query runs in one transaction (BEGIN IMMEDIATE ... COMMIT): an
// error in any statement, or the size cap (ErrDatabaseFull), rolls back
// everything the query did, and a query cannot open a transaction of its
// own (BEGIN, COMMIT and ROLLBACK are refused; SAVEPOINT works). The
// Cursor holds the last statement's rows; a commit is on disk when Exec
// returns.
//
// A query stays inside its database and limits: ATTACH, DETACH,
// load_extension and pragmas other than allowedPragmas are refused
// ("not authorized"), and Cloudflare's SQL limits hold (sqlLimits: 100 KB
// statements, 100 bound parameters, 2 MB values, 100 columns).
//
// Where it differs from Cloudflare's sql.exec: the bindings go to every
// statement that has placeholders, not only to the last one; RowsRead
// counts the rows returned, not the rows scanned.
func (d *DB) Exec(class, id, query string, args ...any) (*Cursor, error) {
	path, err := d.Path(class, id)
	if err != nil {
		return nil, err
	}
	for {
		h, err := d.acquire(class+"/"+id, path)
		if err != nil {
			return nil, err
		}
		h.mu.Lock()
		if h.closed {
			// Evicted between acquire and the lock: open it again.
			h.mu.Unlock()
			continue
		}
		c, err := h.exec(query, args, d.opts.MaxBytes)
		var se *sqlite.Error
		if err != nil && !errors.As(err, &se) && !errors.Is(err, ErrDatabaseFull) && h.conn != nil {
			// Not SQLite's answer to the query: the connection itself
			// may be broken. The next call makes a new one.
			h.conn.Close()
			h.conn = nil
		}
		h.lastUsed = time.Now()
		h.mu.Unlock()
		return c, err
	}
}

// acquire returns the object's handle, opening it if need be, and marks it
// the most recently used.
func (d *DB) acquire(key, path string) (*handle, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	if h := d.open[key]; h != nil {
		d.lru.MoveToFront(h.elem)
		return h, nil
	}
	h, err := d.openHandle(key, path)
	if err != nil {
		return nil, err
	}
	d.open[key] = h
	h.elem = d.lru.PushFront(h)
	// Over the bound: close the least recently used idle ones.
	for e := d.lru.Back(); e != nil && len(d.open) > d.opts.MaxOpen; {
		prev := e.Prev()
		if v := e.Value.(*handle); v != h && v.mu.TryLock() {
			d.drop(v)
			v.mu.Unlock()
		}
		e = prev
	}
	return h, nil
}

// openHandle creates the object's file (0600, its directory 0700) and opens
// it. SQLite opens the file lazily, on the first query.
func (d *DB) openHandle(key, path string) (*handle, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(path), err)
	}
	// Created here so that it gets our mode; SQLite gives its -wal and
	// -shm files the mode of the database file.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	f.Close()
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	// WAL with synchronous=FULL: one fsync per commit, durable when Exec
	// returns, as the bbolt store's writes are.
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", fmt.Sprintf("max_page_count(%d)", max(d.opts.MaxBytes/pageSize, 1)))
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	// One connection: the object's calls are serialised anyway, and a
	// second connection would only hold a second page cache.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return &handle{key: key, path: path, db: db, lastUsed: time.Now()}, nil
}

// drop closes h and forgets it. The caller holds d.mu and h.mu.
func (d *DB) drop(h *handle) {
	h.close()
	if d.open[h.key] == h {
		delete(d.open, h.key)
	}
	if h.elem != nil {
		d.lru.Remove(h.elem)
		h.elem = nil
	}
}

// close closes h's connection and database. The caller holds h.mu.
func (h *handle) close() error {
	if h.closed {
		return nil
	}
	h.closed = true
	var errs []error
	if h.conn != nil {
		errs = append(errs, h.conn.Close())
	}
	return errors.Join(append(errs, h.db.Close())...)
}

// Limits set on every connection: Cloudflare's SQL storage limits for
// SQLite-backed Durable Objects
// (https://developers.cloudflare.com/durable-objects/platform/limits/,
// "SQL storage limits").
var sqlLimits = []struct{ id, value int }{
	{sqlite3.SQLITE_LIMIT_LENGTH, 2_000_000},       // string, BLOB or row: 2 MB
	{sqlite3.SQLITE_LIMIT_SQL_LENGTH, 100_000},     // SQL statement: 100 KB
	{sqlite3.SQLITE_LIMIT_COLUMN, 100},             // columns per table
	{sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100},    // bound parameters per query
	{sqlite3.SQLITE_LIMIT_FUNCTION_ARG, 32},        // arguments per SQL function
	{sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 50}, // bytes in a LIKE or GLOB pattern
	{sqlite3.SQLITE_LIMIT_ATTACHED, 0},             // no ATTACH (authorize refuses it too)
}

// connect makes h's connection, with the limits and the authorizer. The
// caller holds h.mu.
func (h *handle) connect() error {
	c, err := h.db.Conn(context.Background())
	if err != nil {
		return fmt.Errorf("opening %s: %w", h.path, err)
	}
	for _, l := range sqlLimits {
		if _, err := sqlite.Limit(c, l.id, l.value); err != nil {
			c.Close()
			return fmt.Errorf("setting the limits of %s: %w", h.path, err)
		}
	}
	err = c.Raw(func(dc any) error {
		r, ok := dc.(sqlite.AuthorizerRegisterer)
		if !ok {
			return fmt.Errorf("the driver's connection %T has no authorizer", dc)
		}
		return r.RegisterAuthorizer(h.authorize)
	})
	if err != nil {
		c.Close()
		return err
	}
	h.conn = c
	return nil
}

// allowedPragmas are the pragmas a query may run: ones that read the
// schema or check the database, and the foreign-key and optimizer switches
// Cloudflare also allows. The others could lift the size cap
// (max_page_count, page_size), give up durability (synchronous,
// journal_mode) or reach outside the database.
var allowedPragmas = map[string]bool{
	"table_info": true, "table_xinfo": true, "table_list": true, "index_info": true, "index_xinfo": true,
	"index_list": true, "foreign_key_list": true, "foreign_key_check": true, "quick_check": true,
	"integrity_check": true, "page_count": true, "freelist_count": true, "data_version": true,
	"foreign_keys": true, "defer_foreign_keys": true, "legacy_alter_table": true, "optimize": true,
	"case_sensitive_like": true, "recursive_triggers": true, "reverse_unordered_selects": true,
}

// authorize is SQLite's authorizer for h's connection. It refuses ATTACH
// and DETACH (a database file anywhere the daemon may write), pragmas
// outside allowedPragmas, load_extension, and, in the caller's query,
// BEGIN, COMMIT and ROLLBACK: the Exec's own transaction is the only one,
// and a COMMIT inside would end it halfway through the query.
func (h *handle) authorize(action sqlite.AuthorizerActionCode, arg1, arg2, _, _ string) sqlite.AuthorizerReturnCode {
	switch action {
	case sqlite.AuthAttach, sqlite.AuthDetach:
		return sqlite.AuthorizerDeny
	case sqlite.AuthPragma:
		if !h.inQuery || allowedPragmas[strings.ToLower(arg1)] {
			return sqlite.AuthorizerOK
		}
		return sqlite.AuthorizerDeny
	case sqlite.AuthFunction:
		if strings.EqualFold(arg2, "load_extension") {
			return sqlite.AuthorizerDeny
		}
	case sqlite.AuthTransaction:
		if h.inQuery {
			return sqlite.AuthorizerDeny
		}
	}
	return sqlite.AuthorizerOK
}

func (h *handle) exec(query string, args []any, maxBytes int64) (c *Cursor, err error) {
	if h.conn == nil {
		if err := h.connect(); err != nil {
			return nil, err
		}
	}
	ctx := context.Background()
	tx, err := h.conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, mapErr(err, maxBytes)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var before, after int64
	if err := tx.QueryRow("SELECT total_changes()").Scan(&before); err != nil {
		return nil, mapErr(err, maxBytes)
	}
	// Until the rows are closed: the driver may prepare a statement of
	// the query as it steps through them.
	h.inQuery = true
	defer func() { h.inQuery = false }()
	rows, err := tx.Query(query, args...)
	if err != nil {
		return nil, mapErr(err, maxBytes)
	}
	c = &Cursor{Rows: [][]any{}}
	if c.Columns, err = rows.Columns(); err != nil {
		rows.Close()
		return nil, mapErr(err, maxBytes)
	}
	for rows.Next() {
		row := make([]any, len(c.Columns))
		ptrs := make([]any, len(row))
		for i := range row {
			ptrs[i] = &row[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			rows.Close()
			return nil, mapErr(err, maxBytes)
		}
		for i, v := range row {
			if t, ok := v.(time.Time); ok {
				// The driver parses text in DATE/DATETIME/TIMESTAMP
				// columns; give the script a string, as SQLite has.
				row[i] = t.Format("2006-01-02 15:04:05.999999999-07:00")
			}
		}
		c.Rows = append(c.Rows, row)
	}
	if err := rows.Close(); err != nil {
		return nil, mapErr(err, maxBytes)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr(err, maxBytes)
	}
	h.inQuery = false
	if err := tx.QueryRow("SELECT total_changes()").Scan(&after); err != nil {
		return nil, mapErr(err, maxBytes)
	}
	if err := tx.Commit(); err != nil {
		return nil, mapErr(err, maxBytes)
	}
	c.RowsRead = int64(len(c.Rows))
	c.RowsWritten = after - before
	return c, nil
}

// sqliteFull is SQLITE_FULL: max_page_count reached (or the disk is full).
const sqliteFull = 13

func mapErr(err error, maxBytes int64) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqliteFull {
		return fmt.Errorf("%w: the object's SQL database is at its limit of %d bytes (or the disk is full)", ErrDatabaseFull, maxBytes)
	}
	return err
}

// Remove closes the object's database and deletes its files; a database
// that does not exist is not an error. A call running on the object is
// waited for; calls to other objects wait meanwhile, which is fine for what
// calls it (purging a sandbox, deleteAll).
func (d *DB) Remove(class, id string) error {
	path, err := d.Path(class, id)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.open[class+"/"+id]; h != nil {
		h.mu.Lock()
		d.drop(h)
		h.mu.Unlock()
	}
	var errs []error
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Exists says whether the object has a database file.
func (d *DB) Exists(class, id string) (bool, error) {
	path, err := d.Path(class, id)
	if err != nil {
		return false, err
	}
	_, err = os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// OpenCount is the number of databases open now.
func (d *DB) OpenCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.open)
}

// janitor closes databases idle for longer than IdleTimeout.
func (d *DB) janitor() {
	defer close(d.done)
	t := time.NewTicker(max(d.opts.IdleTimeout/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			d.closeIdle(time.Now().Add(-d.opts.IdleTimeout))
		}
	}
}

// closeIdle closes the databases last used before cutoff.
func (d *DB) closeIdle(cutoff time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for e := d.lru.Back(); e != nil; {
		prev := e.Prev()
		if h := e.Value.(*handle); h.mu.TryLock() {
			if h.lastUsed.Before(cutoff) {
				d.drop(h)
			}
			h.mu.Unlock()
		}
		e = prev
	}
}

// Close waits for running calls and closes every database.
func (d *DB) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.stop)
	var errs []error
	for _, h := range d.open {
		h.mu.Lock()
		errs = append(errs, h.close())
		h.mu.Unlock()
	}
	d.open = map[string]*handle{}
	d.lru.Init()
	d.mu.Unlock()
	<-d.done
	return errors.Join(errs...)
}
