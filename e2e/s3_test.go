package e2e

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/procstat"
	"github.com/interceptd/interceptd/store/s3store/s3test"
)

// The S3 namespace's links to the two daemons' host namespaces: a /30
// each, on TEST-NET-2, which only namespaces this test makes hold.
const (
	s3SideA, s3HostA = "198.51.100.1", "198.51.100.2"
	s3SideB, s3HostB = "198.51.100.5", "198.51.100.6"
	s3Bucket         = "interceptd-e2e"
	s3Timeout        = 3 * time.Second
)

// s3Fleet is two daemons, each in its own host namespace, whose blobs are
// in one S3 server (SeaweedFS) that runs in a namespace of its own.
type s3Fleet struct {
	A, B *Env
	S3   *s3test.Server
}

func newS3Fleet(t *testing.T) *s3Fleet {
	t.Helper()
	requireRoot(t)
	if s3test.Binary() == "" {
		t.Skip("no SeaweedFS weed binary (.ci/test builds it)")
	}
	keys := t.TempDir()
	os.WriteFile(filepath.Join(keys, "access"), []byte(s3test.AccessKey+"\n"), 0o600)
	os.WriteFile(filepath.Join(keys, "secret"), []byte(s3test.SecretKey+"\n"), 0o600)
	cfg := func(endpoint string) string {
		return fmt.Sprintf(`store:
  blobs:
    backend: s3
    s3:
      endpoint: %s
      bucket: %s
      region: us-east-1
      prefix: fleet/
      access_key_file: %s
      secret_key_file: %s
      insecure: true
      request_timeout: %s
`, endpoint, s3Bucket, filepath.Join(keys, "access"), filepath.Join(keys, "secret"), s3Timeout) + perSandboxHandlers
	}
	// The daemons' config names the S3 port before the server starts.
	ports, err := s3test.NamespacePorts()
	if err != nil {
		t.Fatal(err)
	}
	port := ports.S3()
	f := &s3Fleet{}
	f.A = NewEnv(t, Options{NoStart: true, ExtraConfig: cfg(s3SideA + ":" + strconv.Itoa(port))})
	f.B = NewEnv(t, Options{NoStart: true, ExtraConfig: cfg(s3SideB + ":" + strconv.Itoa(port))})

	ns := "ie2e-" + f.A.ID + "-s3"
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	for _, l := range []struct {
		host, dev, s3IP, hostIP string
	}{{f.A.HostNS, "s3a", s3SideA, s3HostA}, {f.B.HostNS, "s3b", s3SideB, s3HostB}} {
		run(t, "ip", "-n", ns, "link", "add", l.dev, "type", "veth", "peer", "name", "s3", "netns", l.host)
		run(t, "ip", "-n", ns, "addr", "add", l.s3IP+"/30", "dev", l.dev)
		run(t, "ip", "-n", ns, "link", "set", l.dev, "up")
		run(t, "ip", "-n", l.host, "addr", "add", l.hostIP+"/30", "dev", "s3")
		run(t, "ip", "-n", l.host, "link", "set", "s3", "up")
	}
	// Started after the namespaces (cleanups run last first: the server
	// stops before its namespace goes).
	f.S3 = s3test.Start(t, s3test.Options{IP: "127.0.0.1", Bind: "0.0.0.0", Netns: "/run/netns/" + ns, Buckets: []string{s3Bucket}, Ports: ports})
	if f.S3.Port() != port {
		t.Fatalf("the S3 server is on port %d, the daemons' config says %d", f.S3.Port(), port)
	}
	f.A.Start()
	f.B.Start()
	return f
}

func writeRandomFile(t *testing.T, size int, seed uint64) (path, md5hex string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "blob.bin")
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	h := md5.New()
	r := rand.New(rand.NewPCG(seed, 7))
	buf := make([]byte, 1<<20)
	for written := 0; written < size; written += len(buf) {
		for j := 0; j < len(buf); j += 8 {
			v := r.Uint64()
			for k := 0; k < 8; k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		n := min(len(buf), size-written)
		fh.Write(buf[:n])
		h.Write(buf[:n])
	}
	return path, hex.EncodeToString(h.Sum(nil))
}

// watchRSS samples a daemon's anonymous RSS until the returned function is
// called, which returns the peak's growth over what it was at first.
func watchRSS(t *testing.T, e *Env) func() int64 {
	t.Helper()
	pid := e.daemon.Process.Pid
	_, base, err := procstat.RSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	stop := procstat.Peak(pid, 20*time.Millisecond)
	return func() int64 { _, peak := stop(); return peak - base }
}

// inFor runs a command in a sandbox with a time limit of its own (Env.In
// has 30 s, short for a large blob on a busy machine).
func inFor(t *testing.T, sb Sandbox, limit time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", sb.Netns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v in %s: %v\n%s", args, sb.Name, err, out)
	}
	return string(out)
}

func TestTwoDaemonsShareBlobsThroughAnS3Store(t *testing.T) {
	f := newS3Fleet(t)
	a, b := f.A.Create("s3a"), f.B.Create("s3b")

	// 64 MiB by default; INTERCEPTD_E2E_S3_BLOB_MIB=1024 gives the 1 GiB
	// figures of bench/README.md.
	size := 64 << 20
	if n, err := strconv.Atoi(os.Getenv("INTERCEPTD_E2E_S3_BLOB_MIB")); err == nil && n > 0 {
		size = n << 20
	}
	path, want := writeRandomFile(t, size, 1)
	rssA := watchRSS(t, f.A)
	start := time.Now()
	out := inFor(t, a, 10*time.Minute, "curl", "-sS", "-m", "600", "-T", path, "-H", "Content-Type: application/x-test", "http://my.r2/big.bin")
	up := time.Since(start)
	growthA := rssA()
	var info struct {
		Size int64
		Etag string
	}
	json.Unmarshal([]byte(out), &info)
	if info.Size != int64(size) || info.Etag != want {
		t.Fatalf("A's upload answered %s, want size %d etag %s", out, size, want)
	}

	t.Run("B reads A's blob byte for byte, with the same ETag", func(t *testing.T) {
		rssB := watchRSS(t, f.B)
		start := time.Now()
		got := inFor(t, b, 10*time.Minute, "sh", "-c", "curl -sS -m 600 http://my.r2/big.bin | md5sum")
		down := time.Since(start)
		growthB := rssB()
		if !strings.HasPrefix(got, want) {
			t.Errorf("B's download has md5 %s, want %s", got, want)
		}
		t.Logf("%d MiB blob through S3: up from A's sandbox %v (%.0f MB/s), A's anonymous RSS growth %.1f MiB; down to B's %v (%.0f MB/s), B's growth %.1f MiB",
			size>>20, up.Round(time.Millisecond), float64(size)/1e6/up.Seconds(), float64(growthA)/(1<<20),
			down.Round(time.Millisecond), float64(size)/1e6/down.Seconds(), float64(growthB)/(1<<20))
		// Streamed in 8 MiB parts and ranges: memory must not grow with
		// the object (the bound is 32 MiB).
		for _, g := range []struct {
			who    string
			growth int64
		}{{"A (upload)", growthA}, {"B (download)", growthB}} {
			if g.growth > 32<<20 {
				t.Errorf("daemon %s: anonymous RSS grew by %.1f MiB moving %d MiB", g.who, float64(g.growth)/(1<<20), size>>20)
			}
		}
		head := f.B.MustIn(b, "curl", "-sS", "-m", "5", "-I", "http://my.r2/big.bin")
		if !strings.Contains(head, `"`+want+`"`) || !strings.Contains(head, "application/x-test") {
			t.Errorf("B's HEAD:\n%s", head)
		}
	})

	t.Run("B reads ranges of it, one across the store's part boundary", func(t *testing.T) {
		data, _ := os.ReadFile(path)
		for _, r := range [][2]int{{0, 99}, {8<<20 - 500, 8<<20 + 499}, {size - 1000, size - 1}} {
			got := f.B.MustIn(b, "sh", "-c", fmt.Sprintf("curl -sS -m 10 -r %d-%d http://my.r2/big.bin | md5sum", r[0], r[1]))
			sum := md5.Sum(data[r[0] : r[1]+1])
			if !strings.HasPrefix(got, hex.EncodeToString(sum[:])) {
				t.Errorf("range %d-%d: md5 %s", r[0], r[1], got)
			}
		}
	})

	t.Run("B sees A's overwrite and delete", func(t *testing.T) {
		f.A.MustIn(a, "curl", "-sS", "-m", "5", "-X", "PUT", "--data-binary", "second version", "http://my.r2/big.bin")
		if got := f.B.MustIn(b, "curl", "-sS", "-m", "5", "http://my.r2/big.bin"); got != "second version" {
			t.Errorf("B reads %.40q after A's overwrite", got)
		}
		f.A.MustIn(a, "curl", "-sS", "-m", "5", "-X", "DELETE", "http://my.r2/big.bin")
		if got := f.B.MustIn(b, "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://my.r2/big.bin"); got != "404" {
			t.Errorf("B gets %s after A's delete, want 404", got)
		}
	})

	t.Run("store --check probes the bucket", func(t *testing.T) {
		if out, errOut, code := f.B.CLI("store", "--check"); code != 0 {
			t.Errorf("store --check: exit %d\n%s%s", code, out, errOut)
		}
	})

	t.Run("a purge of A's sandbox deletes its private blobs from the store and leaves B's", func(t *testing.T) {
		f.A.MustIn(a, "curl", "-sS", "-f", "-m", "5", "-X", "PUT", "--data-binary", "a's", "http://private.r2/p")
		f.B.MustIn(b, "curl", "-sS", "-f", "-m", "5", "-X", "PUT", "--data-binary", "b's", "http://private.r2/p")
		if _, errOut, code := f.A.CLI("sandbox", "delete", "--purge", "s3a"); code != 0 {
			t.Fatalf("delete --purge: %s", errOut)
		}
		a2 := f.A.Create("s3a")
		if got := f.A.MustIn(a2, "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://private.r2/p"); got != "404" {
			t.Errorf("the re-created sandbox finds its purged blob: %s", got)
		}
		if got := f.B.MustIn(b, "curl", "-sS", "-m", "5", "http://private.r2/p"); got != "b's" {
			t.Errorf("B's private blob after A's purge: %q", got)
		}
	})

	t.Run("B's listing shows what A wrote", func(t *testing.T) {
		for _, k := range []string{"dir/1", "dir/2", "top"} {
			f.A.MustIn(a, "curl", "-sS", "-m", "5", "-X", "PUT", "--data-binary", k, "http://my.r2/"+k)
		}
		got := f.B.MustIn(b, "curl", "-sS", "-m", "5", "http://my.r2/?delimiter=/")
		if !strings.Contains(got, `"top"`) || !strings.Contains(got, `"dir/"`) || strings.Contains(got, `"dir/1"`) {
			t.Errorf("B's listing: %s", got)
		}
	})
}

func TestWhenTheS3StoreIsDownBlobsAnswer503AndTheRestWorks(t *testing.T) {
	f := newS3Fleet(t)
	a, b := f.A.Create("s3a"), f.B.Create("s3b")
	f.A.MustIn(a, "curl", "-sS", "-m", "5", "-X", "PUT", "--data-binary", "before", "http://my.r2/k")

	// A store that hangs: connections open, nothing answered.
	f.S3.Freeze()
	t.Run("while the store hangs, a blob write answers 503 store_unavailable after the timeout", func(t *testing.T) {
		start := time.Now()
		out, _ := f.A.In(a, "curl", "-sS", "-m", "25", "-w", "\n%{http_code}", "-X", "PUT", "--data-binary", "during", "http://my.r2/k")
		took := time.Since(start)
		if !strings.HasSuffix(out, "\n503") || !strings.Contains(out, "store_unavailable") {
			t.Errorf("a write while S3 hangs answered:\n%s", out)
		}
		// The timeout (one call, or two), with room for a loaded machine;
		// never the 25 s of curl's own limit.
		if took < s3Timeout/2 || took > 4*s3Timeout {
			t.Errorf("the 503 took %v, request_timeout %v", took, s3Timeout)
		}
	})
	f.S3.Thaw()

	// A store that is down: connections refused.
	f.S3.Stop()
	t.Run("a blob write answers 503 store_unavailable within the timeout", func(t *testing.T) {
		start := time.Now()
		out, _ := f.A.In(a, "curl", "-sS", "-m", "25", "-w", "\n%{http_code}", "-X", "PUT", "--data-binary", "during", "http://my.r2/k")
		took := time.Since(start)
		if !strings.HasSuffix(out, "\n503") || !strings.Contains(out, "store_unavailable") {
			t.Errorf("a write while S3 is down answered:\n%s", out)
		}
		// The timeout, with room for a loaded machine; never the 25 s of
		// curl's own limit.
		if took > 4*s3Timeout {
			t.Errorf("the 503 took %v, request_timeout %v", took, s3Timeout)
		}
	})
	t.Run("a blob read answers 503 too", func(t *testing.T) {
		if out, _ := f.B.In(b, "curl", "-sS", "-m", "25", "-w", "\n%{http_code}", "http://my.r2/k"); !strings.HasSuffix(out, "\n503") {
			t.Errorf("a read while S3 is down answered:\n%s", out)
		}
	})
	t.Run("store --check fails, naming the S3 store", func(t *testing.T) {
		_, errOut, code := f.A.CLI("store", "--check")
		if code == 0 || !strings.Contains(errOut, s3SideA) || !strings.Contains(errOut, "store_unavailable") {
			t.Errorf("store --check while S3 is down: exit %d\n%s", code, errOut)
		}
	})
	t.Run("DNS, interception, KV and policy go on", func(t *testing.T) {
		if out := f.A.MustIn(a, "curl", "-sS", "-m", "5", "http://example.test/up"); !strings.Contains(out, `"URI":"/up"`) {
			t.Errorf("an intercepted request to a name: %s", out)
		}
		f.A.MustIn(a, "curl", "-sS", "-m", "5", "-X", "PUT", "--data", "v", "http://my.kv/during")
		if got := f.A.MustIn(a, "curl", "-sS", "-m", "5", "http://my.kv/during"); got != "v" {
			t.Errorf("kv read %q", got)
		}
		if out := f.A.MustIn(a, "curl", "-sS", "-m", "5", "http://"+a.Gateway+"/"); !strings.Contains(out, "denied (protected_destination)") {
			t.Errorf("the policy no longer denies the gateway: %s", out)
		}
	})

	if err := f.S3.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Run("after the store returns, blobs work again without a daemon restart", func(t *testing.T) {
		var out string
		// The first request may find a connection the outage broke: give
		// the daemon a few tries, well inside a client's patience.
		for i := 0; i < 10; i++ {
			out, _ = f.A.In(a, "curl", "-sS", "-m", "10", "-w", "\n%{http_code}", "-X", "PUT", "--data-binary", "after", "http://my.r2/k")
			if strings.HasSuffix(out, "\n200") || strings.HasSuffix(out, "\n201") {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if got := f.B.MustIn(b, "curl", "-sS", "-m", "5", "http://my.r2/k"); got != "after" {
			t.Errorf("B reads %q after the store returned (A's last answer: %s)", got, out)
		}
	})
}
