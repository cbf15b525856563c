package s3store_test

import (
	"crypto/md5"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/procstat"
	"github.com/interceptd/interceptd/store"
)

// pseudo is n bytes of a fast pseudo-random stream, made as it is read,
// so the benchmark holds none of it.
type pseudo struct {
	r *rand.PCG
	n int64
}

func (p *pseudo) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n)]
	for i := 0; i < len(b); i += 8 {
		v := p.r.Uint64()
		for k := 0; k < 8 && i+k < len(b); k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	p.n -= int64(len(b))
	return len(b), nil
}

// BenchmarkBlobOf1GiBUpAndDownThroughS3 moves a 1 GiB blob (size unknown to
// the store, as a chunked upload) into the real S3 server and back, and
// reports the process's peak anonymous RSS growth: the streaming bound the
// issue sets is 32 MiB.
//
//	go test -run '^$' -bench BlobOf1GiB -benchtime 1x ./store/s3store/
func BenchmarkBlobOf1GiBUpAndDownThroughS3(b *testing.B) {
	const size = 1 << 30
	srv := server(b)
	s := open(b, srv, nil)
	bk := s.Blobs("bench", store.ScopeShared, store.Limits{MaxObjectBytes: 2 << 30})
	for b.Loop() {
		runtime.GC()
		_, base, err := procstat.RSS(os.Getpid())
		if err != nil {
			b.Fatal(err)
		}
		stop := procstat.Peak(os.Getpid(), 10*time.Millisecond)
		h := md5.New()
		start := time.Now()
		oi, err := bk.Put("big", io.TeeReader(&pseudo{r: rand.NewPCG(1, 2), n: size}, h), store.PutOptions{Size: -1})
		if err != nil {
			b.Fatal(err)
		}
		up := time.Since(start)
		if oi.ETag != hex.EncodeToString(h.Sum(nil)) {
			b.Fatalf("ETag %s", oi.ETag)
		}
		start = time.Now()
		o, err := bk.Open("big")
		if err != nil {
			b.Fatal(err)
		}
		h.Reset()
		n, err := io.Copy(h, o)
		o.Close()
		down := time.Since(start)
		if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != oi.ETag {
			b.Fatalf("read back %d bytes, %v", n, err)
		}
		_, peak := stop()
		growth := peak - base
		b.ReportMetric(float64(size)/1e6/up.Seconds(), "MB/s-up")
		b.ReportMetric(float64(size)/1e6/down.Seconds(), "MB/s-down")
		b.ReportMetric(float64(growth)/(1<<20), "MiB-rss-growth")
		if growth > 32<<20 {
			b.Errorf("anonymous RSS grew by %.1f MiB moving 1 GiB (bound: 32 MiB)", float64(growth)/(1<<20))
		}
		bk.Delete("big")
	}
}
