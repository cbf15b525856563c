package kinds_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/internal/kinds"
	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/routertest"
	"github.com/prometheus/client_golang/prometheus"
)

// echo is a toy kind registered from this test file alone: it answers with
// its greeting and the handler's host.
type echo struct {
	Greeting string `yaml:"greeting"`
	Status   int    `yaml:"status"`
}

func (c *echo) Validate(bad func(field, format string, args ...any)) {
	if c.Greeting == "" {
		bad("greeting", "missing")
	}
}

func (c *echo) Build(d kinds.Deps) (router.Handler, error) {
	host := d.Host
	return router.HandlerFunc(func(w http.ResponseWriter, r *http.Request, env router.Env) error {
		if c.Status != 0 {
			w.WriteHeader(c.Status)
		}
		_, err := io.WriteString(w, c.Greeting+" from "+host)
		return err
	}), nil
}

func init() {
	kinds.Register(kinds.Kind{Name: "echo", NewConfig: func() kinds.Config { return &echo{} }})
}

const toyDoc = `version: 1
handlers:
  - host: Hello.Test
    kind: echo
    greeting: hi
    status: 202
`

func TestAKindRegisteredFromATestFileServesARequestThroughTheRouter(t *testing.T) {
	cfg, err := config.Parse("toy.yaml", []byte(toyDoc))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Handlers) != 1 || cfg.Handlers[0].Kind != "echo" {
		t.Fatalf("handlers = %+v", cfg.Handlers)
	}
	h := cfg.Handlers[0]
	host := policy.NormalizeHost(h.Host)
	hd, err := h.Config().Build(kinds.Deps{Host: host, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// Served as a sandbox's request is: through the server and the router.
	addr, _ := routertest.Serve(t, router.Config{
		Hosts: map[string]router.Route{host: {Name: host, Handler: hd}},
		Identify: func(netip.Addr) (policy.Caller, bool) {
			return policy.Caller{Sandbox: "web1", Policy: policy.MustCompile(policy.Policy{})}, true
		},
		Metrics: router.NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10)),
		Logger:  slog.New(slog.DiscardHandler),
	})
	r, err := http.NewRequest("GET", "http://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Host = "hello.test"
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 202 || string(body) != "hi from hello.test" {
		t.Errorf("got %d %q, want 202 \"hi from hello.test\"", resp.StatusCode, body)
	}
}

func TestAToyKindsConfigIsDecodedStrictlyAndValidatedByItself(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"an unknown field names its line", strings.Replace(toyDoc, "status: 202", "colour: red", 1), []string{"line 6", "colour", "echo handler"}},
		{"a mistyped field names its path and line", strings.Replace(toyDoc, "status: 202", "status: lots", 1), []string{"line 6", "field handlers[0].status"}},
		{"its own validation names the field", strings.Replace(toyDoc, "greeting: hi", "greeting: ''", 1), []string{"field handlers[0].greeting", "missing"}},
		{"another kind's field is not its own", strings.Replace(toyDoc, "status: 202", "bucket: b", 1), []string{"line 6", "bucket"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("toy.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatal("parsed without error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestTheKindsListNamesTheBuiltInsInOrderThenTheOthers(t *testing.T) {
	if got := strings.Join(kinds.Names(), ","); got != "kv,blob,state,proxy,respond,deny,echo" {
		t.Errorf("kinds = %s", got)
	}
}
