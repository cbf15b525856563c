package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/internal/config"
)

// exampleEnv serves examples/workers/<dir> as the default worker. The
// example's own config.yaml must load (strictly, as `interceptd serve
// --config` would) and name the worker.js beside it; the worker entry the
// daemon gets is that one, with bindings replaced when the test gives its
// own (an allowlist of the test's hosts, not the example's).
func exampleEnv(t *testing.T, dir, bindings string) *Env {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("../examples/workers", dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("the example's config does not load: %v", err)
	}
	if len(cfg.Workers) != 1 || cfg.DefaultWorker != cfg.Workers[0].Name {
		t.Fatalf("%s: want one worker, the default; got %d, default %q", path, len(cfg.Workers), cfg.DefaultWorker)
	}
	w := cfg.Workers[0]
	if want := filepath.Join(filepath.Dir(path), "worker.js"); w.Path != want {
		t.Fatalf("%s: the script is %s, want %s", path, w.Path, want)
	}
	if bindings == "" {
		for name, b := range w.Bindings {
			if b.Kind() != "var" {
				t.Fatalf("binding %s: the test passes on vars only, not %s", name, b.Kind())
			}
			v, _ := json.Marshal(b.Value())
			bindings += fmt.Sprintf("      %s: { var: %s }\n", name, v)
		}
	}
	if bindings != "" {
		bindings = "    bindings:\n" + bindings
	}
	return NewEnv(t, Options{ExtraConfig: fmt.Sprintf("workers:\n  - name: %s\n    script: %s\n%sdefault_worker: %s\n",
		w.Name, w.Path, bindings, w.Name)})
}

func TestWorkerExampleAllowlistAnswersAJSONDenyForHostsOffItsList(t *testing.T) {
	// The test's hosts, not the example's: example.test and api.github.com
	// resolve to the test's upstream echo.
	e := exampleEnv(t, "allowlist", "      ALLOWED_HOSTS: { var: \"example.test, *.github.com\" }\n")
	sb := e.Create("allow1")
	curl := func(args ...string) (body, code string) {
		out, _ := e.In(sb, append([]string{"curl", "-sS", "-m", "10", "-w", " %{http_code}"}, args...)...)
		i := strings.LastIndexByte(out, ' ')
		if i < 0 {
			return out, ""
		}
		return out[:i], out[i+1:]
	}
	tests := []struct {
		name string
		url  string
		host string // the Host the upstream sees, for an allowed one
	}{
		{"an exact name on the list goes on to the upstream", "http://example.test/a?b=1", "example.test"},
		{"a name under a *. entry goes on to the upstream", "http://api.github.com/user", "api.github.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, code := curl(tt.url)
			var echo Echo
			if err := json.Unmarshal([]byte(body), &echo); code != "200" || err != nil || echo.Host != tt.host {
				t.Errorf("curl %s: %s %q, want 200 and the echo of Host %s", tt.url, code, body, tt.host)
			}
		})
	}
	t.Run("a host off the list gets 403 and a JSON body naming it", func(t *testing.T) {
		body, code := curl("http://other.test/x")
		var deny struct{ Error, Host, Sandbox string }
		if err := json.Unmarshal([]byte(body), &deny); code != "403" || err != nil {
			t.Fatalf("got %s %q (%v), want 403 and JSON", code, body, err)
		}
		if deny.Error != "host_not_allowed" || deny.Host != "other.test" || deny.Sandbox != "allow1" {
			t.Errorf("the deny body: %+v", deny)
		}
		if h := e.MustIn(sb, "curl", "-sS", "-o", "/dev/null", "-w", "%{content_type}", "http://other.test/"); !strings.HasPrefix(h, "application/json") {
			t.Errorf("Content-Type %q, want application/json", h)
		}
	})
	t.Run("the apex of a *. entry is not on the list", func(t *testing.T) {
		// github.com itself: the upstream's DNS does not know it, but the
		// worker answers before any lookup (the sandbox dials the echo).
		if _, code := curl("-H", "Host: github.com", "http://"+upstreamIP+"/"); code != "403" {
			t.Errorf("github.com: %s, want 403", code)
		}
	})
	if !strings.Contains(e.Log(), "allowlist: denied other.test") {
		t.Errorf("the worker's console.warn is not in the daemon's log")
	}
}

func TestWorkerExampleLoggingLogsEachRequestAndPassesItOn(t *testing.T) {
	e := exampleEnv(t, "logging", "")
	sb := e.Create("log1")
	out := e.MustIn(sb, "curl", "-sS", "-m", "10", "-D", "-", "--data-binary", "payload-42", "http://example.test/logged/path?q=1")
	headers, body, _ := strings.Cut(out, "\r\n\r\n")
	var echo Echo
	if err := json.Unmarshal([]byte(body), &echo); err != nil {
		t.Fatalf("the answer is not the upstream's echo: %q", out)
	}
	if echo.Method != "POST" || echo.Host != "example.test" || echo.URI != "/logged/path?q=1" || echo.Body != "payload-42" {
		t.Errorf("the upstream got %+v, want the sandbox's POST as it was sent", echo)
	}
	var requestID string
	for _, l := range strings.Split(headers, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "X-Interceptd-Request-Id") {
			requestID = strings.TrimSpace(v)
		}
	}
	var line string
	for _, l := range strings.Split(e.Log(), "\n") {
		if strings.Contains(l, "request POST example.test /logged/path from log1") {
			line = l
		}
	}
	switch {
	case line == "":
		t.Fatalf("no console.log line for the request in the daemon's log")
	case requestID == "" || !strings.Contains(line, "request_id="+requestID):
		t.Errorf("the console.log line does not carry the request's id %q: %s", requestID, line)
	}
	if !strings.Contains(e.Log(), "response 200 example.test") {
		t.Errorf("no console.log line for the response")
	}
}

func TestWorkerExampleRewriteChangesAHeaderAndTheBodyText(t *testing.T) {
	e := exampleEnv(t, "rewrite", "")
	sb := e.Create("rw1")
	out := e.MustIn(sb, "curl", "-sS", "-m", "10", "-D", "-", "http://example.test/go?to=http://docs.example.test/")
	headers, body, _ := strings.Cut(out, "\r\n\r\n")
	var echo Echo
	if err := json.Unmarshal([]byte(body), &echo); err != nil {
		t.Fatalf("the answer is not JSON: %q", out)
	}
	// The example's FROM/TO: http:// becomes https:// in the text; the
	// upstream saw http://, as the sandbox sent it.
	if echo.URI != "/go?to=https://docs.example.test/" {
		t.Errorf("the body's URI %q, want the rewritten one", echo.URI)
	}
	lower := strings.ToLower(headers)
	for _, want := range []string{"cache-control: no-store", "x-rewritten-by: interceptd", "content-type: application/json"} {
		if !strings.Contains(lower, want) {
			t.Errorf("the response headers lack %q:\n%s", want, headers)
		}
	}
	if strings.Contains(lower, "content-length:") {
		// The upstream's length would be wrong for the longer body: the
		// rewritten response is chunked (or its own length).
		for _, l := range strings.Split(lower, "\r\n") {
			if n, ok := strings.CutPrefix(l, "content-length: "); ok && n != fmt.Sprint(len(body)) {
				t.Errorf("Content-Length %s, body of %d bytes", n, len(body))
			}
		}
	}
}
