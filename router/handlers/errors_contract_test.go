package handlers

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/routertest"
)

// closedPort is an address on loopback where nothing listens.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return ap
}

func TestForwardAndProxyReturnTheirFailuresForTheRouterToWrite(t *testing.T) {
	dead := closedPort(t)
	tests := []struct {
		name string
		h    router.Handler
		r    func() *http.Request
	}{
		{"a lean forward to a refused upstream", &Forward{Logger: slog.New(slog.DiscardHandler)}, func() *http.Request {
			return httptest.NewRequest("GET", "http://up.test/", nil)
		}},
		{"a forward through the reverse proxy to a refused upstream", &Forward{Logger: slog.New(slog.DiscardHandler)}, func() *http.Request {
			r := httptest.NewRequest("POST", "http://up.test/", strings.NewReader("x"))
			r.Header.Set("Upgrade", "websocket") // not lean: the reverse proxy carries it
			r.Header.Set("Connection", "Upgrade")
			return r
		}},
		{"a proxy to a refused upstream", &Proxy{Name: "p", Upstream: &url.URL{Scheme: "http", Host: dead.String()}, Logger: slog.New(slog.DiscardHandler)}, func() *http.Request {
			return httptest.NewRequest("GET", "http://p.test/", nil)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			err := tt.h.ServeHTTP(w, tt.r(), router.Env{Sandbox: "web1", Dest: dead})
			var he *router.Error
			if !errors.As(err, &he) || he.Status != http.StatusBadGateway || he.Reason != "upstream refused" {
				t.Fatalf("returned %v, want a 502 upstream refused", err)
			}
			if w.Body.Len() != 0 || w.Header().Get("X-Interceptd-Error") != "" {
				t.Errorf("the handler wrote its own error: %q", w.Body)
			}
			w = httptest.NewRecorder()
			routertest.AsRouter(tt.h, w, tt.r(), router.Env{Sandbox: "web1", Dest: dead})
			if w.Code != http.StatusBadGateway || w.Header().Get("X-Interceptd-Error") != "upstream refused" {
				t.Errorf("as the router writes it: %d %q", w.Code, w.Header().Get("X-Interceptd-Error"))
			}
		})
	}
}
