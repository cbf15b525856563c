package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/store"
)

// A crash right after a delete can leave the record of a sandbox whose
// slot is given again later: at the next start that record names the
// live sandbox's link. Dropping it must not take the live one down.
func TestARestartKeepsALiveSandboxWhoseSlotAStaleRecordAlsoNames(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("keep")
	e.MustIn(sb, "curl", "-sS", "-X", "PUT", "--data", "v1", "http://my.kv/k")
	e.Stop()
	db, err := store.Open(filepath.Join(e.Dir, "data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := db.Sandboxes()
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(recs["keep"], &rec); err != nil {
		db.Close()
		t.Fatalf("keep's record: %v", err)
	}
	rec["name"], rec["netns"], rec["netns_path"] = "stale", e.Prefix+"stale", "/run/netns/"+e.Prefix+"stale" // that namespace went with it
	raw, _ := json.Marshal(rec)
	err = db.SaveSandbox("stale", raw)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	if out, code := e.In(sb, "curl", "-sS", "-m", "5", "http://my.kv/k"); code != 0 || out != "v1" {
		t.Errorf("the live sandbox after the restart: exit %d, %q", code, out)
	}
	list, _, _ := e.CLI("sandbox", "list")
	if !strings.Contains(list, "keep") || strings.Contains(list, "stale") {
		t.Errorf("after the restart:\n%s", list)
	}
}
