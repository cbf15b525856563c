package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestKillNineLosesNoAcknowledgedWriteAndReadoptsEverything(t *testing.T) {
	e := NewEnv(t, Options{})
	writers := []Sandbox{e.Create("w1"), e.Create("w2")}
	rulesBefore := ruleCount(t, e)

	var mu sync.Mutex
	acked := map[string]string{} // url → value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for wi, sb := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				url := fmt.Sprintf("http://my.kv/w%d-%d", wi, i)
				if i%2 == 1 {
					url = fmt.Sprintf("http://state.do/s%d", i)
				}
				val := fmt.Sprintf("v%d-%d", wi, i)
				if _, code := e.In(sb, "curl", "-sS", "-f", "-m", "2", "-X", "PUT", "--data", val, url); code == 0 {
					mu.Lock()
					acked[sb.Name+" "+url] = val
					mu.Unlock()
				}
			}
		}()
	}
	// An upload in flight when the daemon dies.
	upload := exec.Command("ip", "netns", "exec", writers[0].Netns, "sh", "-c", "(head -c 3000000 /dev/zero; sleep 5) | curl -sS -T - http://my.r2/partial")
	upload.Start()
	defer upload.Wait()
	// Kill once enough writes are acknowledged, however slow a busy
	// machine is, and at least 1.5 s in so the upload is under way.
	for begun, until := time.Now(), time.Now().Add(60*time.Second); ; time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if (n >= 10 && time.Since(begun) >= 1500*time.Millisecond) || time.Now().After(until) {
			break
		}
	}
	e.Kill()
	close(stop)
	wg.Wait()
	if len(acked) < 10 {
		t.Fatalf("only %d writes were acknowledged before the kill", len(acked))
	}

	start := time.Now()
	e.Start()
	ready := time.Since(start)
	sb := writers[0]
	if got := e.MustIn(sb, "dig", "+short", "+time=1", "+tries=1", "@"+nowhereIP, "my.kv"); got != virtualKV+"\n" {
		t.Errorf("DNS after restart: %q", got)
	}
	t.Logf("%d acknowledged writes; restarted and answering %v after the kill", len(acked), ready.Round(time.Millisecond))
	for key, val := range acked {
		name, url, _ := strings.Cut(key, " ")
		var w Sandbox
		for _, x := range writers {
			if x.Name == name {
				w = x
			}
		}
		if got := e.MustIn(w, "curl", "-sS", url); got != val {
			t.Errorf("%s in %s after kill -9: %q, want %q", url, name, got, val)
		}
	}
	if got := ruleCount(t, e); got != rulesBefore {
		t.Errorf("%d iptables lines after the restart, %d before", got, rulesBefore)
	}
	if list, _, _ := e.CLI("sandbox", "list"); !strings.Contains(list, "w1") || !strings.Contains(list, "w2") {
		t.Errorf("sandboxes not re-adopted:\n%s", list)
	}
	if got := e.MustIn(sb, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://my.r2/partial"); got != "404" {
		t.Errorf("the upload cut by the kill is visible: %s", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, errOut, code := e.CLI("store", "--check")
		if code != 0 {
			t.Fatalf("store --check: %s", errOut)
		}
		var st struct {
			Uploads int `json:"blob_uploads"`
			Pending int `json:"blob_pending"`
		}
		json.Unmarshal([]byte(out), &st)
		if st.Uploads == 0 && st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cut upload's chunks were not reclaimed: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
