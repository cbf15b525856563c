package e2e

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/procstat"
)

func TestALargeBlobGoesUpAndDownWithBoundedMemory(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("big")
	const size = 256 << 20
	path := filepath.Join(t.TempDir(), "big.bin")
	f, _ := os.Create(path)
	h := md5.New()
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for i := 0; i < size/len(buf); i++ {
		for j := 0; j < len(buf); j += 8 {
			v := r.Uint64()
			for k := 0; k < 8; k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		f.Write(buf)
		h.Write(buf)
	}
	f.Close()
	want := hex.EncodeToString(h.Sum(nil))

	pid := e.daemon.Process.Pid
	baseTotal, baseAnon, err := procstat.RSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	stopPeak := procstat.Peak(pid, 20*time.Millisecond)
	start := time.Now()
	out := e.MustIn(sb, "curl", "-sS", "-m", "300", "-T", path, "-H", "Content-Type: application/x-test", "http://my.r2/big.bin")
	up := time.Since(start)
	var info struct {
		Size int64
		Etag string
	}
	json.Unmarshal([]byte(out), &info)
	if info.Size != size || info.Etag != want {
		t.Fatalf("upload answered %s, want size %d etag %s", out, size, want)
	}
	start = time.Now()
	got := e.MustIn(sb, "sh", "-c", "curl -sS -m 300 http://my.r2/big.bin | md5sum")
	down := time.Since(start)
	peakT, peakA := stopPeak()
	if !strings.HasPrefix(got, want) {
		t.Fatalf("downloaded md5 %s, want %s", got, want)
	}
	growthAnon, growthTotal := peakA-baseAnon, peakT-baseTotal
	t.Logf("256 MiB blob: up %v (%.0f MB/s), down %v (%.0f MB/s); daemon RSS growth: anon %.1f MiB, total %.1f MiB (mapped file pages of the store included)",
		up.Round(time.Millisecond), float64(size)/1e6/up.Seconds(), down.Round(time.Millisecond), float64(size)/1e6/down.Seconds(),
		float64(growthAnon)/(1<<20), float64(growthTotal)/(1<<20))
	// The content is streamed in 1 MiB chunks: anonymous memory must not
	// grow with the object. (Mapped pages of the bbolt file are page cache
	// the kernel can drop, reported above but not bounded here.)
	if growthAnon > 64<<20 {
		t.Errorf("daemon anonymous RSS grew by %d MiB moving a 256 MiB blob", growthAnon>>20)
	}
	t.Run("a range of the large object", func(t *testing.T) {
		got := e.MustIn(sb, "sh", "-c", "curl -sS -r 100000000-100000999 http://my.r2/big.bin | md5sum")
		fh, _ := os.Open(path)
		defer fh.Close()
		part := make([]byte, 1000)
		fh.ReadAt(part, 100000000)
		sum := md5.Sum(part)
		if !strings.HasPrefix(got, hex.EncodeToString(sum[:])) {
			t.Errorf("range md5 %s", got)
		}
	})
}

func TestAChunkedUploadAndAnAbortedOne(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("up")
	out := e.MustIn(sb, "sh", "-c", "head -c 5000000 /dev/zero | curl -sS -T - http://my.r2/chunked")
	if !strings.Contains(out, `"size": 5000000`) {
		t.Fatalf("chunked upload: %s", out)
	}
	// 3 MB, then the client dies mid-body. (curl -m would not do: on its
	// timeout curl ends a chunked body cleanly, so the upload completes.)
	e.MustIn(sb, "sh", "-c", "(head -c 3000000 /dev/zero; sleep 5) | curl -sS -T - http://my.r2/aborted & sleep 1; kill -9 $!")
	if got := e.MustIn(sb, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://my.r2/aborted"); got != "404" {
		t.Errorf("aborted object: GET %s", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		stats, _, _ := e.CLI("store")
		var st struct{ BlobUploads, BlobGarbage, BlobPending int }
		json.Unmarshal([]byte(strings.NewReplacer("blob_uploads", "BlobUploads", "blob_garbage", "BlobGarbage", "blob_pending", "BlobPending").Replace(stats)), &st)
		if st.BlobUploads == 1 && st.BlobGarbage == 0 && st.BlobPending == 0 {
			break // just "chunked"
		}
		if time.Now().After(deadline) {
			t.Fatalf("the aborted upload left chunks: %s", stats)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := e.MustIn(sb, "curl", "-sS", "http://my.r2/?prefix=a"); !strings.Contains(got, `"objects": []`) {
		t.Errorf("listing after abort: %s", got)
	}
}

const perSandboxHandlers = `handlers:
  - {host: my.kv, kind: kv, namespace: default}
  - {host: private.kv, kind: kv, namespace: private, scope: sandbox}
  - {host: my.r2, kind: blob, bucket: default}
  - {host: private.r2, kind: blob, bucket: private, scope: sandbox}
  - {host: state.do, kind: state}
`

func TestSandboxScopedDataIsInvisibleToAnotherSandbox(t *testing.T) {
	e := NewEnv(t, Options{ExtraConfig: perSandboxHandlers})
	a, b := e.Create("owner"), e.Create("other")
	for _, url := range []string{"http://private.kv/secret", "http://private.r2/secret", "http://state.do/secret"} {
		e.MustIn(a, "curl", "-sS", "-f", "-X", "PUT", "--data", "mine", url)
		if got := e.MustIn(a, "curl", "-sS", url); got != "mine" {
			t.Errorf("%s: owner reads %q", url, got)
		}
		if got := e.MustIn(b, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url); got != "404" {
			t.Errorf("%s: another sandbox gets %s", url, got)
		}
	}
	e.MustIn(a, "curl", "-sS", "-f", "-X", "PUT", "--data", "everyone", "http://my.kv/public")
	if got := e.MustIn(b, "curl", "-sS", "http://my.kv/public"); got != "everyone" {
		t.Errorf("shared key: %q", got)
	}
}

func TestStateOutlivesItsSandboxAndARestartUntilPurged(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("worker")
	e.MustIn(sb, "curl", "-sS", "-f", "-X", "PUT", "--data", "41", "http://state.do/counter")
	txn := `{"conditions":[{"key":"counter","value":"41"}],"writes":[{"key":"counter","value":"42"}]}`
	e.MustIn(sb, "curl", "-sS", "-f", "-X", "POST", "--data", txn, "http://state.do/")
	if out, _ := e.In(sb, "curl", "-sS", "-w", " %{http_code}", "-X", "POST", "--data", txn, "http://state.do/"); !strings.HasSuffix(out, " 409") {
		t.Errorf("a stale transaction: %s", out)
	}
	e.CLI("sandbox", "delete", "worker")
	sb = e.Create("worker")
	if got := e.MustIn(sb, "curl", "-sS", "http://state.do/counter"); got != "42" {
		t.Fatalf("after delete and re-create: %q", got)
	}
	e.Stop()
	e.Start()
	if got := e.MustIn(sb, "curl", "-sS", "http://state.do/counter"); got != "42" {
		t.Fatalf("after a daemon restart: %q", got)
	}
	if out, _, code := e.CLI("state", "get", "worker", "counter"); code != 0 || out != "42" {
		t.Errorf("operator state get: %q (exit %d)", out, code)
	}
	if _, errOut, code := e.CLI("sandbox", "delete", "--purge", "worker"); code != 0 {
		t.Fatalf("delete --purge: %s", errOut)
	}
	if _, errOut, code := e.CLI("state", "get", "worker", "counter"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("state after purge: exit %d %q", code, errOut)
	}
	// A name with neither a sandbox nor anything stored gets the same
	// answer with --purge as without (it used to exit 0 with it).
	for _, args := range [][]string{{"sandbox", "delete", "worker"}, {"sandbox", "delete", "--purge", "worker"}, {"sandbox", "delete", "--purge", "never-was"}} {
		if _, errOut, code := e.CLI(args...); code != 1 || !strings.Contains(errOut, "no such sandbox") {
			t.Errorf("%v: exit %d %q, want 1 and no such sandbox", args, code, errOut)
		}
	}
}

func TestOperatorsSeedAndInspectFromTheHost(t *testing.T) {
	e := NewEnv(t, Options{})
	steps := [][]string{
		{"kv", "put", "config/mode", "fast"},
		{"kv", "put", "--ttl", "3600", "--metadata", `{"by":"ops"}`, "token", "s3cret"},
		{"state", "put", "--create", "agent1", "credential", "per-sandbox"},
	}
	for _, s := range steps {
		if _, errOut, code := e.CLI(s...); code != 0 {
			t.Fatalf("%v: %s", s, errOut)
		}
	}
	// A state put for a sandbox that does not exist is refused, naming it,
	// unless --create (as for agent1 above); a put with no value never waits
	// on a terminal (script gives the CLI one for standard input).
	if _, errOut, code := e.CLI("state", "put", "agnet1", "credential", "typo"); code == 0 || !strings.Contains(errOut, `no sandbox named "agnet1"`) {
		t.Errorf("state put for a sandbox that does not exist: exit %d, %q", code, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tty := exec.CommandContext(ctx, "script", "-qec", binary+" kv put from-a-terminal", "/dev/null")
	tty.Env = append(os.Environ(), "INTERCEPTD_SOCKET="+e.Socket)
	ttyOut, err := tty.CombinedOutput()
	if ctx.Err() != nil || err == nil || !strings.Contains(string(ttyOut), "no value: give it as an argument") {
		t.Errorf("kv put with no value at a terminal: %v (timed out: %v)\n%s", err, ctx.Err() != nil, ttyOut)
	}
	file := filepath.Join(t.TempDir(), "seed.txt")
	os.WriteFile(file, []byte("seeded blob"), 0o644)
	if _, errOut, code := e.CLI("blob", "put", "--content-type", "text/plain", "seed.txt", file); code != 0 {
		t.Fatalf("blob put: %s", errOut)
	}
	sb := e.Create("agent1")
	for url, want := range map[string]string{
		"http://my.kv/config/mode":   "fast",
		"http://my.kv/token":         "s3cret",
		"http://my.r2/seed.txt":      "seeded blob",
		"http://state.do/credential": "per-sandbox",
	} {
		if got := e.MustIn(sb, "curl", "-sS", url); got != want {
			t.Errorf("%s = %q, want %q", url, got, want)
		}
	}
	e.MustIn(sb, "curl", "-sS", "-X", "PUT", "--data", "written by the container", "http://state.do/report")
	if out, _, _ := e.CLI("state", "get", "agent1", "report"); out != "written by the container" {
		t.Errorf("operator reads %q", out)
	}
	out, _, _ := e.CLI("kv", "list", "--prefix", "config/")
	if !strings.Contains(out, `"name": "config/mode"`) {
		t.Errorf("kv list: %s", out)
	}
	out, _, _ = e.CLI("blob", "get", "seed.txt")
	if out != "seeded blob" {
		t.Errorf("blob get: %q", out)
	}
	if _, errOut, code := e.CLI("kv", "get", "missing"); code != 1 || !strings.Contains(errOut, "key not found") {
		t.Errorf("kv get missing: exit %d %q", code, errOut)
	}
}

// TestExpiriesAreStoredExactlyOrRefused: a TTL or expiration that the store
// cannot hold exactly is a 400 naming the limit, never a 2xx followed by a
// lost or rewritten key (issue 16, items 1-3), on every write path.
func TestExpiriesAreStoredExactlyOrRefused(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("ttl")
	// do runs curl in the sandbox and returns "<status> <body>".
	do := func(args ...string) string {
		out, _ := e.In(sb, append([]string{"curl", "-sS", "-w", "\n%{http_code}"}, args...)...)
		out = strings.TrimSpace(out)
		i := strings.LastIndex(out, "\n")
		return out[i+1:] + " " + strings.TrimSpace(out[:max(i, 0)])
	}
	txn := func(ttl string) string {
		return do("-X", "POST", "--data", `{"writes":[{"key":"t","value":"v","ttl":`+ttl+`}]}`, "http://state.do/")
	}
	refusals := []struct {
		name, got string
		mention   string
	}{
		{"an expiration in 2286 is refused, not acknowledged and lost",
			do("-X", "PUT", "--data", "v", "http://my.kv/k?expiration=10000000000"), "9223372036"},
		{"an expiration past 2262 is refused, not stored wrapped",
			do("-X", "PUT", "--data", "v", "http://my.kv/k?expiration=99999999999"), "9223372036"},
		{"a ttl over the cap names the cap",
			do("-X", "PUT", "--data", "v", "http://my.kv/k?ttl=4000000000"), "3153600000"},
		{"a transaction ttl that overflows is refused, not expired at once",
			txn("10000000000"), "3153600000"},
		{"a negative transaction ttl is refused as PUT refuses it",
			txn("-5"), "at least 1"},
		{"a negative ttl on PUT is refused",
			do("-X", "PUT", "--data", "v", "http://state.do/t?ttl=-5"), "at least 1"},
	}
	for _, r := range refusals {
		t.Logf("%s: %s", r.name, r.got)
		if !strings.HasPrefix(r.got, "400 ") || !strings.Contains(r.got, r.mention) {
			t.Errorf("%s: got %q, want a 400 mentioning %q", r.name, r.got, r.mention)
		}
	}
	// Nothing of a refused write is stored (before: k read back with
	// X-KV-Expiration 7766279630, the wrapped year 2216).
	if got := e.MustIn(sb, "curl", "-sS", "-D", "-", "-o", "/dev/null", "http://my.kv/k"); !strings.HasPrefix(got, "HTTP/1.1 404") {
		t.Errorf("a refused write left the key:\n%s", got)
	}
	if got := do("-X", "PUT", "--data", "v", "http://my.kv/last?expiration=9223372036"); got != "204 " {
		t.Fatalf("an expiration at the limit: %q, want 204", got)
	}
	if got := e.MustIn(sb, "curl", "-sS", "-D", "-", "-o", "/dev/null", "http://my.kv/last"); !strings.Contains(got, "X-Kv-Expiration: 9223372036\r\n") {
		t.Errorf("an expiration at the limit reads back as:\n%s", got)
	}
	for _, ttl := range []string{"-5", "0"} {
		_, errOut, code := e.CLI("kv", "put", "--ttl", ttl, "cli", "v")
		t.Logf("kv put --ttl %s: exit %d %s", ttl, code, strings.TrimSpace(errOut))
		if code != 1 || !strings.Contains(errOut, "at least 1") {
			t.Errorf("kv put --ttl %s: exit %d %q, want exit 1 naming the minimum", ttl, code, errOut)
		}
	}
}
