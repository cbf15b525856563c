package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dashboardExprs returns every PromQL expression of the Grafana dashboard,
// with its variables filled in as Grafana would for "All".
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("../deploy/grafana/interceptd.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Templating struct {
			List []struct{ Name, Type string } `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name+"/"+v.Type] = true
	}
	for _, want := range []string{"datasource/datasource", "sandbox/query"} {
		if !vars[want] {
			t.Errorf("the dashboard has no %s variable", want)
		}
	}
	r := strings.NewReplacer("$__rate_interval", "30s", "$sandbox", ".*", "$job", ".+")
	out := map[string]string{}
	for _, p := range dash.Panels {
		for i, tg := range p.Targets {
			out[fmt.Sprintf("%s #%d", p.Title, i+1)] = r.Replace(tg.Expr)
		}
	}
	return out
}

func TestEveryDashboardQueryHasDataInARealPrometheus(t *testing.T) {
	promBin := need(t, "prometheus")
	exprs := dashboardExprs(t)
	// A worker for the Workers row: a sandbox that names it (the others
	// keep the handlers and the forward) and whose function waits, then
	// fetches, so that concurrent requests wait for a runtime.
	script := filepath.Join(t.TempDir(), "obs.js")
	os.WriteFile(script, []byte(`export default { outboundByHost: { "w.test": async () => {
  await new Promise((r) => setTimeout(r, 500));
  return fetch("http://example.test/");
} } };`), 0o644)
	e := NewEnv(t, Options{ExtraConfig: fmt.Sprintf("workers:\n  - name: obs\n    script: %s\n", script)})
	run(t, "ip", "-n", e.UpNS, "addr", "add", "192.0.2.5/24", "dev", "eth0") // nothing listens: refused

	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: interceptd
    static_configs: [{targets: ["`+e.Metrics+`"]}]
`), 0o644)
	prom := exec.Command("nsenter", "--net=/run/netns/"+e.HostNS, promBin,
		"--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:9090", "--log.level=warn")
	var promLog strings.Builder
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { prom.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			prom.Process.Kill()
			<-done
		}
	})
	query := func(q string) (int, string) {
		out, err := exec.Command("nsenter", "--net=/run/netns/"+e.HostNS, "curl", "-sS", "-m", "5", "-G",
			"--data-urlencode", "query="+q, "http://127.0.0.1:9090/api/v1/query").Output()
		if err != nil {
			return -1, err.Error()
		}
		var res struct {
			Status string
			Error  string
			Data   struct{ Result []json.RawMessage }
		}
		if err := json.Unmarshal(out, &res); err != nil {
			return -1, string(out)
		}
		if res.Status != "success" {
			return -1, res.Error
		}
		return len(res.Data.Result), ""
	}

	// Traffic on every hop: handlers, forwarding (ok and refused), denials,
	// DNS answered, forwarded and denied, store writes and reads, a worker
	// (more requests at once than its pool has runtimes: 8).
	open, off, w := e.Create("open"), e.CreateWith("off", "--internet", "off"), e.CreateWith("w", "--worker", "obs")
	for i := 0; i < 3; i++ {
		e.MustIn(open, "curl", "-sS", "-X", "PUT", "--data", "v", "http://my.kv/k")
		e.MustIn(open, "curl", "-sS", "http://my.kv/k")
		e.MustIn(open, "curl", "-sS", "http://example.test/")
		e.In(open, "curl", "-sS", "-m", "3", "http://192.0.2.5/")
		e.In(open, "curl", "-sSk", "-m", "3", "https://192.0.2.5/") // the TLS front: nothing listens there
		// A routed flow (port 2222 is neither intercepted nor captured).
		e.MustIn(open, "curl", "-sS", "-m", "3", "-o", "/dev/null", "http://"+upstreamIP+":2222/")
		e.In(off, "curl", "-sS", "http://example.test/")
		e.MustIn(open, "sh", "-c", "echo blob | curl -sS -T - http://my.r2/b && curl -sS http://my.r2/b")
		e.MustIn(w, "sh", "-c", "for i in $(seq 12); do curl -sS -o /dev/null http://w.test/ & done; wait")
		time.Sleep(1500 * time.Millisecond)
	}
	deadline := time.Now().Add(60 * time.Second)
	var missing []string
	for {
		missing = missing[:0]
		for name, q := range exprs {
			n, errMsg := query(q)
			switch {
			case errMsg != "" && n < 0 && strings.Contains(errMsg, "parse"):
				t.Fatalf("%s: invalid PromQL %q: %s", name, q, errMsg)
			case n <= 0:
				missing = append(missing, fmt.Sprintf("%s: %s %s", name, q, errMsg))
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d dashboard queries returned no series:\n%s\nprometheus log:\n%s", len(missing), len(exprs), strings.Join(missing, "\n"), promLog.String())
		}
		time.Sleep(time.Second)
	}
	t.Logf("all %d dashboard queries return series from a real Prometheus", len(exprs))
}

func TestAlertRulesCheckAndPassTheirTests(t *testing.T) {
	promtool := need(t, "promtool")
	if out, err := exec.Command(promtool, "check", "rules", "../deploy/prometheus/alerts.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	cmd := exec.Command(promtool, "test", "rules", "alerts_test.yml")
	cmd.Dir = "../deploy/prometheus"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	if out, err := exec.Command(promtool, "check", "config", "--syntax-only", "../deploy/prometheus/prometheus.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
}
