package handlers

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/routertest"
)

func TestAProxyCanTellTheUpstreamWhichSandboxCalledOnlyWhenConfigured(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Caller")+"|"+r.Header.Get("X-Static"))
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	for _, tt := range []struct {
		name string
		set  map[string]string
		want string
	}{
		// The sandbox's own X-Caller is overwritten: it cannot pose as another.
		{"a {sandbox} template names the caller", map[string]string{"X-Caller": "sandbox={sandbox}", "X-Static": "s"}, "sandbox=web1|s"},
		// Off by default: what the sandbox sent is all the upstream gets.
		{"without one, the daemon adds nothing", map[string]string{"X-Static": "s"}, "forged-by-the-sandbox|s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &Proxy{Name: "api", Upstream: u, Logger: slog.New(slog.DiscardHandler), SetHeaders: tt.set}
			rec := httptest.NewRecorder()
			r := httptest.NewRequest("GET", "http://api.test/", nil)
			r.Header.Set("X-Caller", "forged-by-the-sandbox")
			routertest.AsRouter(p, rec, r, router.Env{Sandbox: "web1", Host: "api.test"})
			if got := rec.Body.String(); rec.Code != 200 || got != tt.want {
				t.Errorf("%d %q, want %q", rec.Code, got, tt.want)
			}
		})
	}
}
