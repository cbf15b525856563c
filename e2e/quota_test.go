package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// quotaConfig gives every sandbox small store quotas; `sandbox create
// --quota` raises them for one.
const quotaConfig = `quota:
  kv: {bytes: 64KiB}
  blob: {bytes: 2MiB, keys: 100}
  state: {keys: 10}
`

// put PUTs size zero bytes (a file, so Content-Length is known) from a
// sandbox and returns the status and the X-Interceptd-Error header.
func (e *Env) put(sb Sandbox, url string, size int) (status, reason string) {
	e.t.Helper()
	path := filepath.Join(e.Dir, "zeros-"+itoa(size))
	if _, err := os.Stat(path); err != nil {
		if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	out, _ := e.In(sb, "curl", "-sS", "-m", "30", "-o", "/dev/null", "-D", "-", "-w", "%{http_code}", "-T", path, url)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "X-Interceptd-Error") {
			reason = strings.TrimSpace(v)
		}
	}
	return strings.TrimSpace(lines[len(lines)-1]), reason
}

func itoa(n int) string { return strconv.Itoa(n) }

// usageOf reads `sandbox show NAME` and returns its usage and quota.
func (e *Env) usageOf(name string) (usage, quota map[string]map[string]int64) {
	e.t.Helper()
	out, errOut, code := e.CLI("sandbox", "show", name)
	if code != 0 {
		e.t.Fatalf("sandbox show %s: %s", name, errOut)
	}
	var v struct {
		Usage map[string]map[string]int64 `json:"usage"`
		Quota map[string]map[string]int64 `json:"quota"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		e.t.Fatalf("sandbox show %s: %v\n%s", name, err, out)
	}
	return v.Usage, v.Quota
}

func TestASandboxOverItsQuotaGets507AndOthersStillWrite(t *testing.T) {
	e := NewEnv(t, Options{ExtraConfig: quotaConfig})
	// Internet off: the stores are still theirs to fill.
	small := e.CreateWith("small", "--internet", "off")
	big := e.CreateWith("big", "--internet", "off", "--quota", "blob.bytes=8MiB", "--quota", "kv.bytes=1MiB")

	t.Run("kv: refused with 507 quota_exceeded once the bytes would pass the quota", func(t *testing.T) {
		var codes []string
		for _, k := range []string{"a", "b", "c", "d"} {
			code, reason := e.put(small, "http://my.kv/"+k, 16<<10)
			codes = append(codes, code)
			if code == "507" && (!strings.HasPrefix(reason, "quota_exceeded") || !strings.Contains(reason, "kv") || !strings.Contains(reason, "bytes")) {
				t.Errorf("507 reason %q does not name quota_exceeded, the kind and the limit", reason)
			}
		}
		if got := strings.Join(codes, " "); got != "204 204 204 507" {
			t.Errorf("16 KiB writes against 64 KiB: %s, want 204 204 204 507", got)
		}
		if code := e.curl(small, "http://my.kv/d"); !strings.HasSuffix(code, " 404") {
			t.Errorf("the refused key exists: %s", code)
		}
	})
	t.Run("kv: a delete gives the space back", func(t *testing.T) {
		e.MustIn(small, "curl", "-sS", "-f", "-X", "DELETE", "http://my.kv/a")
		if code, reason := e.put(small, "http://my.kv/d", 16<<10); code != "204" {
			t.Errorf("after a delete: %s %s", code, reason)
		}
	})
	t.Run("blob: the second 1 MiB object passes 2 MiB and is refused, and nothing is left", func(t *testing.T) {
		if code, reason := e.put(small, "http://my.r2/one", 1<<20); code != "200" {
			t.Fatalf("first object: %s %s", code, reason)
		}
		code, reason := e.put(small, "http://my.r2/two", 1<<20)
		if code != "507" || !strings.HasPrefix(reason, "quota_exceeded") || !strings.Contains(reason, "blob") {
			t.Errorf("second object: %s %q, want 507 quota_exceeded naming blob", code, reason)
		}
		// A streamed upload of unknown length is cut as it crosses the quota.
		out, _ := e.In(small, "sh", "-c", "head -c 50000000 /dev/zero | curl -sS -m 30 -o /dev/null -w '%{http_code}' -T - http://my.r2/stream")
		if !strings.HasSuffix(strings.TrimSpace(out), "507") {
			t.Errorf("a 50 MB streamed upload: %q, want 507", out)
		}
		for _, k := range []string{"two", "stream"} {
			if got := e.curl(small, "http://my.r2/"+k); !strings.HasSuffix(got, " 404") {
				t.Errorf("refused object %s is there: %s", k, got)
			}
		}
	})
	t.Run("state: the eleventh key passes a quota of 10 keys", func(t *testing.T) {
		for i := 0; i < 10; i++ {
			if code, reason := e.put(small, "http://state.do/k"+itoa(i), 10); code != "204" {
				t.Fatalf("state key %d: %s %s", i, code, reason)
			}
		}
		code, reason := e.put(small, "http://state.do/k10", 10)
		if code != "507" || !strings.Contains(reason, "state") || !strings.Contains(reason, "keys") {
			t.Errorf("eleventh key: %s %q", code, reason)
		}
		// Overwriting a key it has is no new key.
		if code, reason := e.put(small, "http://state.do/k3", 20); code != "204" {
			t.Errorf("overwriting a key at the quota: %s %s", code, reason)
		}
	})
	t.Run("another sandbox with its own quota still writes", func(t *testing.T) {
		for i := 0; i < 5; i++ {
			if code, reason := e.put(big, "http://my.r2/big"+itoa(i), 1<<20); code != "200" {
				t.Errorf("big's object %d: %s %s", i, code, reason)
			}
			if code, reason := e.put(big, "http://my.kv/big"+itoa(i), 100<<10); code != "204" {
				t.Errorf("big's key %d: %s %s", i, code, reason)
			}
		}
		if code, reason := e.put(big, "http://state.do/k", 10); code != "204" {
			t.Errorf("big's state: %s %s", code, reason)
		}
	})
	t.Run("usage and quota in sandbox show, status and the metrics", func(t *testing.T) {
		usage, quota := e.usageOf("small")
		if got := usage["kv"]["keys"]; got != 3 {
			t.Errorf("small kv keys = %d, want 3", got)
		}
		if got := usage["kv"]["bytes"]; got != 3*(16<<10+1) {
			t.Errorf("small kv bytes = %d, want %d (three 16 KiB values with one-byte keys)", got, 3*(16<<10+1))
		}
		if got := usage["blob"]["bytes"]; got < 1<<20 || got > 1<<20+100 {
			t.Errorf("small blob bytes = %d, want 1 MiB and its key", got)
		}
		if got := usage["state"]["keys"]; got != 10 {
			t.Errorf("small state keys = %d, want 10", got)
		}
		if quota["kv"]["bytes"] != 64<<10 || quota["blob"]["bytes"] != 2<<20 || quota["state"]["keys"] != 10 {
			t.Errorf("small's quota: %v", quota)
		}
		_, bq := e.usageOf("big")
		if bq["blob"]["bytes"] != 8<<20 || bq["kv"]["bytes"] != 1<<20 || bq["state"]["keys"] != 10 {
			t.Errorf("big's quota (overrides and the default): %v", bq)
		}
		out, errOut, code := e.CLI("status", "--json")
		if code != 0 {
			t.Fatalf("status: %s", errOut)
		}
		var st struct {
			StoreUsage map[string]map[string]int64 `json:"store_usage"`
		}
		json.Unmarshal([]byte(out), &st)
		if got := st.StoreUsage["blob"]["keys"]; got != 6 {
			t.Errorf("status store_usage blob keys = %d, want 6\n%s", got, out)
		}
		if text, _, _ := e.CLI("status"); !strings.Contains(text, "store usage") {
			t.Errorf("status does not show store usage:\n%s", text)
		}
		m := e.Scrape()
		if v, ok := sample(m, `interceptd_store_usage_bytes{kind="kv",sandbox="small"}`); !ok || int64(v) != usage["kv"]["bytes"] {
			t.Errorf("usage metric for small's kv: %v %v, want %d", v, ok, usage["kv"]["bytes"])
		}
		if v, _ := sample(m, `interceptd_store_refusals_total{kind="kv",reason="quota_exceeded"}`); v < 1 {
			t.Errorf("refusals metric: %v", v)
		}
	})
	t.Run("a quota raised on a running sandbox applies to its next write", func(t *testing.T) {
		if code, _ := e.put(small, "http://my.kv/e", 16<<10); code != "507" {
			t.Fatalf("before: %s", code)
		}
		if out, errOut, code := e.CLI("sandbox", "quota", "small", "--quota", "kv.bytes=1MiB"); code != 0 || !strings.Contains(out, `"bytes": 1048576`) {
			t.Fatalf("sandbox quota: %s %s", out, errOut)
		}
		if code, reason := e.put(small, "http://my.kv/e", 16<<10); code != "204" {
			t.Errorf("after raising it: %s %s", code, reason)
		}
		if _, errOut, code := e.CLI("sandbox", "quota", "small", "--quota", "disk.bytes=1"); code == 0 || !strings.Contains(errOut, "disk.bytes") {
			t.Errorf("an unknown quota field: exit %d %q", code, errOut)
		}
	})
	t.Run("the check verifies the usage", func(t *testing.T) {
		if out, errOut, code := e.CLI("store", "--check"); code != 0 {
			t.Errorf("store --check: %s %s", out, errOut)
		}
	})
}

func TestUnderTheFreeSpaceFloorWritesAre507DiskFullAndReadsGoOn(t *testing.T) {
	// A floor higher than any disk: the data dir is always under it.
	e := NewEnv(t, Options{ExtraConfig: "store:\n  min_free_bytes: 1000TiB\n"})
	sb := e.CreateWith("writer", "--internet", "off")
	for _, url := range []string{"http://my.kv/k", "http://my.r2/o", "http://state.do/s"} {
		code, reason := e.put(sb, url, 1000)
		if code != "507" || !strings.HasPrefix(reason, "disk_full") {
			t.Errorf("PUT %s: %s %q, want 507 disk_full", url, code, reason)
		}
	}
	for url, want := range map[string]string{"http://my.kv/k": " 404", "http://my.kv/": " 200", "http://my.r2/": " 200", "http://state.do/s": " 404"} {
		if got := e.curl(sb, url); !strings.HasSuffix(got, want) {
			t.Errorf("GET %s under the floor: %q, want%s", url, got, want)
		}
	}
	if got := e.curl(sb, "-X", "DELETE", "http://my.kv/k"); !strings.HasSuffix(got, " 204") {
		t.Errorf("DELETE under the floor: %q", got)
	}
	if _, errOut, code := e.CLI("kv", "put", "seed", "v"); code == 0 || !strings.Contains(errOut, "disk_full") {
		t.Errorf("an operator's write under the floor: exit %d %q", code, errOut)
	}
	if out, _, _ := e.CLI("status"); !strings.Contains(out, "UNDER THE FLOOR") {
		t.Errorf("status does not say the store is under its floor:\n%s", out)
	}
	if v, _ := sample(e.Scrape(), `interceptd_store_refusals_total{kind="blob",reason="disk_full"}`); v < 1 {
		t.Errorf("disk_full refusals of blob writes: %v", v)
	}
}

func TestStoreCompactGivesSpaceBackOfflineAndKeepsTheData(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.CreateWith("filler", "--internet", "off")
	for i := 0; i < 8; i++ {
		if code, reason := e.put(sb, "http://my.r2/junk"+itoa(i), 4<<20); code != "200" {
			t.Fatalf("upload %d: %s %s", i, code, reason)
		}
	}
	e.MustIn(sb, "curl", "-sS", "-f", "-X", "PUT", "--data", "keep me", "http://my.kv/kept")
	e.MustIn(sb, "curl", "-sS", "-f", "-X", "PUT", "--data", "and me", "http://state.do/kept")
	for i := 1; i < 8; i++ {
		e.MustIn(sb, "curl", "-sS", "-f", "-X", "DELETE", "http://my.r2/junk"+itoa(i))
	}
	usage, _ := e.usageOf("filler")
	if _, errOut, code := e.CLI("store", "compact", "--config", e.Config); code == 0 || !strings.Contains(errOut, "open in another process") || !strings.Contains(errOut, "stop interceptd serve") {
		t.Errorf("compact while the daemon runs: exit %d %q, want a clear refusal", code, errOut)
	}
	db := filepath.Join(e.Dir, "data", "interceptd.db")
	// The deleted objects' chunks are reclaimed in the background.
	e.waitNoBlobGarbage(t)
	e.Stop()
	before, _ := os.Stat(db)
	out, errOut, code := e.CLI("store", "compact", "--config", e.Config)
	if code != 0 {
		t.Fatalf("store compact: exit %d %s", code, errOut)
	}
	after, _ := os.Stat(db)
	t.Logf("%s", strings.TrimSpace(out))
	if after.Size()*2 > before.Size() || !strings.Contains(out, itoa(int(before.Size()))) || !strings.Contains(out, itoa(int(after.Size()))) {
		t.Errorf("compact printed %q; file %d → %d bytes, want under half and both sizes printed", out, before.Size(), after.Size())
	}
	e.Start()
	for url, want := range map[string]string{"http://my.kv/kept": "keep me", "http://state.do/kept": "and me"} {
		if got := e.MustIn(sb, "curl", "-sS", url); got != want {
			t.Errorf("%s after compaction: %q", url, got)
		}
	}
	if got := e.MustIn(sb, "sh", "-c", "curl -sS http://my.r2/junk0 | wc -c"); strings.TrimSpace(got) != itoa(4<<20) {
		t.Errorf("the kept object after compaction: %s bytes", got)
	}
	if u, _ := e.usageOf("filler"); !reflect.DeepEqual(u, usage) {
		t.Errorf("usage after compaction %v, before %v", u, usage)
	}
	if _, errOut, code := e.CLI("store", "--check"); code != 0 {
		t.Errorf("store --check after compaction: %s", errOut)
	}
}
