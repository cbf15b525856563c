package tlsfront

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
)

type fixedSecret string

func (s fixedSecret) Value(router.Env) ([]byte, error) { return []byte(s), nil }

// proxyRouter serves every request with one handler, as the router does
// for a name it gives to that handler.
type proxyRouter struct{ h router.Handler }

func (p proxyRouter) ServeConn(w http.ResponseWriter, r *http.Request, c router.Conn) {
	src, dst := c.Addrs()
	if err := p.h.ServeHTTP(w, r, router.Env{Source: src, Dest: dst, Host: r.Host, Conn: c, Sandbox: "s"}); err != nil {
		router.WriteError(w, err)
	}
}

func TestAnInjectedSecretReachesNoPartOfAnInterceptedAnswerOverHTTP2OrHTTP1(t *testing.T) {
	const token = "tok-9f8e7d6c5b4a3210"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization")
		w.Header().Set("Link", "<"+got+">; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Trailer", "X-Declared")
		w.Header().Set("Location", "https://elsewhere.test/?t="+url.QueryEscape(got))
		w.Header().Set("Set-Cookie", "s="+got)
		w.Header().Set("X-Echo", got)
		w.WriteHeader(http.StatusFound)
		io.WriteString(w, "body "+got[:10])
		w.(http.Flusher).Flush()
		io.WriteString(w, got[10:]+" end")
		w.Header().Set("X-Declared", got)
		w.Header().Set(http.TrailerPrefix+"X-Undeclared", got)
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	p := &handlers.Proxy{Name: "api.test", Upstream: u, Inject: []handlers.Injection{{Header: "Authorization", Template: "Bearer {secret}", Secret: fixedSecret(token)}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ca := testCA(t)
	addr := startFront(t, &Server{Decide: handlerDecider{}, CA: ca, Handler: proxyRouter{p}})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	for _, h2 := range []bool{true, false} {
		c := clientFor(addr, roots, h2)
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		var early []string
		req, _ := http.NewRequest("GET", "https://api.test/x", nil)
		req = req.WithContext(withEarlyHints(req.Context(), &early))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen := strings.Join(early, "\n") + "\n" + string(b)
		for k, v := range resp.Header {
			seen += "\n" + k + ": " + strings.Join(v, ",")
		}
		for k, v := range resp.Trailer {
			seen += "\ntrailer " + k + ": " + strings.Join(v, ",")
		}
		t.Logf("h2=%v %s: %s", h2, resp.Proto, seen)
		if strings.Contains(strings.ToLower(seen), token) || !strings.Contains(seen, "X-Echo") {
			t.Errorf("h2=%v: the sandbox saw the token:\n%s", h2, seen)
		}
	}
}

func withEarlyHints(ctx context.Context, into *[]string) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		for k, v := range h {
			*into = append(*into, fmt.Sprintf("%d %s: %s", code, k, strings.Join(v, ",")))
		}
		return nil
	}})
}
