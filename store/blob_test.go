package store

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openBlobs(t *testing.T) (*DB, *Blobs) {
	db := openTest(t, &Options{ChunkSize: 8}) // small chunks: every test crosses boundaries
	return db, db.Blobs("default", ScopeShared, Limits{MaxObjectBytes: 100})
}

// putBlob uploads content at key or ends the test.
func putBlob(t testing.TB, b *Blobs, key, content string) ObjectInfo {
	t.Helper()
	oi, err := b.Put(key, strings.NewReader(content), PutOptions{Size: -1})
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return oi
}

func md5hex(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }

func readAll(t *testing.T, b *Blobs, key string) string {
	t.Helper()
	o, err := b.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	got, err := io.ReadAll(o)
	if err != nil {
		t.Fatal(err)
	}
	return string(got)
}

func TestBlobRoundTripAcrossChunks(t *testing.T) {
	_, b := openBlobs(t)
	body := "the quick brown fox jumps over the lazy dog"
	info, err := b.Put("dir/fox.txt", strings.NewReader(body), PutOptions{
		Size: -1, HTTP: map[string]string{"Content-Type": "text/plain"}, Custom: map[string]string{"owner": "me"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(body)) || info.ETag != md5hex(body) {
		t.Fatalf("info = %+v", info)
	}
	if got := readAll(t, b, "dir/fox.txt"); got != body {
		t.Fatalf("read %q", got)
	}
	h, err := b.Head("dir/fox.txt")
	if err != nil || h.HTTP["Content-Type"] != "text/plain" || h.Custom["owner"] != "me" {
		t.Errorf("head = %+v %v", h, err)
	}
	o, err := b.Open("dir/fox.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, err := o.Seek(10, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 9)
	if _, err := io.ReadFull(o, part); err != nil {
		t.Fatal(err)
	}
	if string(part) != body[10:19] {
		t.Errorf("seek+read = %q, want %q", part, body[10:19])
	}
	if _, err := b.Put("empty", strings.NewReader(""), PutOptions{Size: 0}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, b, "empty"); got != "" {
		t.Errorf("empty object read %q", got)
	}
}

// failingReader returns data, then an error, as an aborted client does.
type failingReader struct{ data io.Reader }

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.data.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func TestFailedUploadsLeaveNothing(t *testing.T) {
	tests := []struct {
		name string
		r    io.Reader
		opts PutOptions
		want error
	}{
		{"a client that aborts mid-body", &failingReader{strings.NewReader(strings.Repeat("x", 30))}, PutOptions{Size: -1}, io.ErrUnexpectedEOF},
		{"a body shorter than announced", strings.NewReader(strings.Repeat("x", 30)), PutOptions{Size: 40}, ErrIncomplete},
		{"a body over the size limit", strings.NewReader(strings.Repeat("x", 101)), PutOptions{Size: -1}, ErrValueTooLarge},
		{"an announced size over the limit", strings.NewReader("x"), PutOptions{Size: 101}, ErrValueTooLarge},
		{"a Content-MD5 that does not match", strings.NewReader("hello"), PutOptions{Size: -1, ContentMD5: make([]byte, 16)}, ErrBadDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, b := openBlobs(t)
			if _, err := b.Put("k", tt.r, tt.opts); !errors.Is(err, tt.want) {
				t.Fatalf("Put = %v, want %v", err, tt.want)
			}
			if _, err := b.Head("k"); !errors.Is(err, ErrNotFound) {
				t.Errorf("object visible after a failed upload: %v", err)
			}
			db.collect()
			if st, err := db.Stats(); err != nil || st.BlobUploads != 0 || st.BlobGarbage != 0 || st.BlobPending != 0 {
				t.Errorf("left behind: %+v %v", st, err)
			}
		})
	}
}

// etagIs is a precondition that holds while the current object has etag
// ("" for none).
func etagIs(etag string, calls *[]string) func(cur *ObjectInfo) error {
	return func(cur *ObjectInfo) error {
		got := ""
		if cur != nil {
			got = cur.ETag
		}
		*calls = append(*calls, got)
		if got != etag {
			return fmt.Errorf("%w: etag %q", ErrPreconditionFailed, got)
		}
		return nil
	}
}

func TestAPutsPreconditionIsCheckedBeforeTheUploadAndAgainInItsCommit(t *testing.T) {
	_, b := openBlobs(t)
	first := putBlob(t, b, "k", "v1")
	t.Run("a precondition that holds is asked twice and the write goes through", func(t *testing.T) {
		var calls []string
		second, err := b.Put("k", strings.NewReader("v2"), PutOptions{Size: -1, Precondition: etagIs(first.ETag, &calls)})
		if err != nil || len(calls) != 2 || calls[0] != first.ETag || calls[1] != first.ETag {
			t.Fatalf("Put = %v, asked with %q", err, calls)
		}
		first = second
	})
	t.Run("a precondition that fails refuses the upload before reading it", func(t *testing.T) {
		var calls []string
		r := &countingReader{r: strings.NewReader("v3")}
		_, err := b.Put("k", r, PutOptions{Size: -1, Precondition: etagIs("other", &calls)})
		if !errors.Is(err, ErrPreconditionFailed) || len(calls) != 1 || r.n != 0 {
			t.Fatalf("Put = %v, asked %d times, %d bytes read", err, len(calls), r.n)
		}
	})
	t.Run("a writer that replaces the object during the upload is seen at the commit", func(t *testing.T) {
		var calls []string
		var sneaked ObjectInfo
		r := &hookReader{r: strings.NewReader("mine"), hook: func() {
			var err error
			if sneaked, err = b.Put("k", strings.NewReader("theirs"), PutOptions{Size: -1}); err != nil {
				t.Errorf("the other writer's Put: %v", err)
			}
		}}
		_, err := b.Put("k", r, PutOptions{Size: -1, Precondition: etagIs(first.ETag, &calls)})
		if !errors.Is(err, ErrPreconditionFailed) || len(calls) != 2 || calls[1] != sneaked.ETag {
			t.Fatalf("Put = %v, asked with %q", err, calls)
		}
		if oi, _ := b.Head("k"); oi.ETag != sneaked.ETag {
			t.Errorf("the object is %s, want the other writer's %s", oi.ETag, sneaked.ETag)
		}
	})
	t.Run("a precondition on an absent key is asked with nil", func(t *testing.T) {
		var calls []string
		if _, err := b.Put("new", strings.NewReader("x"), PutOptions{Size: -1, Precondition: etagIs("x", &calls)}); !errors.Is(err, ErrPreconditionFailed) || calls[0] != "" {
			t.Errorf("Put = %v, asked with %q", err, calls)
		}
		if _, err := b.Head("new"); !errors.Is(err, ErrNotFound) {
			t.Errorf("the refused upload left an object: %v", err)
		}
	})
}

func TestADeletesPreconditionIsCheckedInItsCommit(t *testing.T) {
	_, b := openBlobs(t)
	oi := putBlob(t, b, "k", "v1")
	var calls []string
	if err := b.DeleteIf("k", etagIs("other", &calls)); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("DeleteIf with a failing precondition = %v", err)
	}
	if _, err := b.Head("k"); err != nil {
		t.Fatalf("a refused delete removed the object: %v", err)
	}
	if err := b.DeleteIf("k", etagIs(oi.ETag, &calls)); err != nil {
		t.Fatalf("DeleteIf with a holding precondition = %v", err)
	}
	if _, err := b.Head("k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the object survived: %v", err)
	}
	if err := b.DeleteIf("k", etagIs("", &calls)); err != nil || calls[len(calls)-1] != "" {
		t.Errorf("DeleteIf on an absent key = %v, asked with %q", err, calls)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// hookReader runs hook once, before its first read returns.
type hookReader struct {
	r    io.Reader
	hook func()
	done bool
}

func (h *hookReader) Read(p []byte) (int, error) {
	if !h.done {
		h.done = true
		h.hook()
	}
	return h.r.Read(p)
}

func TestAnOverwriteIsAtomicForAReaderAndReclaimedAfter(t *testing.T) {
	db, b := openBlobs(t)
	old := strings.Repeat("a", 40)
	putBlob(t, b, "k", old)
	r, err := b.Open("k")
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 10)
	io.ReadFull(r, first)
	putBlob(t, b, "k", strings.Repeat("b", 50))
	db.collect()
	rest, err := io.ReadAll(r)
	if err != nil || string(first)+string(rest) != old {
		t.Fatalf("reader saw a mix: %q %q %v", first, rest, err)
	}
	if st, _ := db.Stats(); st.BlobUploads != 2 {
		t.Errorf("old chunks reclaimed under an open reader: %+v", st)
	}
	r.Close()
	db.collect()
	if st, _ := db.Stats(); st.BlobUploads != 1 || st.BlobGarbage != 0 {
		t.Errorf("after close: %+v", st)
	}
	if got := readAll(t, b, "k"); got != strings.Repeat("b", 50) {
		t.Errorf("new content %q", got)
	}
	if err := b.Delete("k"); err != nil {
		t.Fatal(err)
	}
	db.collect()
	if st, err := db.Stats(); err != nil || st.BlobUploads != 0 {
		t.Errorf("delete left chunks: %+v %v", st, err)
	}
}

func TestBlobListingWithDelimiterAndCursor(t *testing.T) {
	_, b := openBlobs(t)
	for _, k := range []string{"a.txt", "docs/1", "docs/2", "docs/sub/3", "img/x", "z"} {
		putBlob(t, b, k, k)
	}
	type page struct{ objects, prefixes string }
	tests := []struct {
		name  string
		opts  BlobListOptions
		pages []page
	}{
		{"a flat listing pages by limit", BlobListOptions{Limit: 4}, []page{{"[a.txt docs/1 docs/2 docs/sub/3]", "[]"}, {"[img/x z]", "[]"}}},
		{"a delimiter folds prefixes", BlobListOptions{Delimiter: "/"}, []page{{"[a.txt z]", "[docs/ img/]"}}},
		{"a folded prefix is resumed after", BlobListOptions{Delimiter: "/", Limit: 2}, []page{{"[a.txt]", "[docs/]"}, {"[z]", "[img/]"}}},
		{"a prefix with a delimiter lists one level", BlobListOptions{Prefix: "docs/", Delimiter: "/"}, []page{{"[docs/1 docs/2]", "[docs/sub/]"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			for i, want := range tt.pages {
				res, err := b.List(o)
				if err != nil {
					t.Fatal(err)
				}
				var keys []string
				for _, oi := range res.Objects {
					keys = append(keys, oi.Key)
				}
				got := page{fmt.Sprint(keys), fmt.Sprint(res.DelimitedPrefixes)}
				if keys == nil {
					got.objects = "[]"
				}
				if got != want {
					t.Fatalf("page %d = %+v, want %+v", i, got, want)
				}
				if last := i == len(tt.pages)-1; res.Truncated == last {
					t.Fatalf("page %d truncated = %v", i, res.Truncated)
				}
				o.Cursor = res.Cursor
			}
		})
	}
}

func TestPendingUploadsOfACrashedProcessAreReclaimedAtOpen(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{ChunkSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	// Simulate a crash mid-upload: a reader that blocks forever is not
	// needed; write a pending marker and chunks by hand.
	err = db.update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketBlobGC).Put([]byte("deadbeef"), []byte(gcPending)); err != nil {
			return err
		}
		cb, err := tx.Bucket(bucketBlobChunks).CreateBucket([]byte("deadbeef"))
		if err != nil {
			return err
		}
		return cb.Put(chunkKey(0), []byte("partial"))
	})
	if err != nil {
		t.Fatalf("injecting a crashed upload: %v", err)
	}
	// The injection must show as what a crash leaves, or the check after
	// reopening proves nothing.
	if st, err := db.Stats(); err != nil || st.BlobUploads != 1 || st.BlobPending != 1 {
		t.Fatalf("after injection: %+v %v, want one pending upload", st, err)
	}
	db.Close()
	db, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.collect()
	if st, err := db.Stats(); err != nil || st.BlobUploads != 0 || st.BlobPending != 0 {
		t.Errorf("crashed upload not reclaimed: %+v %v", st, err)
	}
}
