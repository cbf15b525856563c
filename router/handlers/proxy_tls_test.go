package handlers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/routertest"
)

func TestAProxyToAnHTTPSUpstreamForwardsOnlyWhenItsCertificateVerifies(t *testing.T) {
	var reached atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.WriteString(w, "upstream")
	}))
	up.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError) // the refused handshake
	up.StartTLS()
	t.Cleanup(up.Close)
	// Another CA: what the proxy trusts when the upstream's certificate is
	// not one it should accept (an impostor, or a man in the middle).
	// Not another httptest server's: they all share one certificate.
	upstreamCA, otherCA := x509.NewCertPool(), x509.NewCertPool()
	upstreamCA.AddCert(up.Certificate())
	otherCA.AddCert(newTestCA(t))
	u, _ := url.Parse(up.URL)

	tests := []struct {
		name        string
		roots       *x509.CertPool
		wantCode    int
		wantReason  string
		wantReached bool
	}{
		{"a certificate the configured CA signs", upstreamCA, 200, "", true},
		{"a certificate the configured CA does not sign", otherCA, http.StatusBadGateway, "upstream certificate", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reached.Store(0)
			p := &Proxy{Name: "api", Upstream: u, Logger: slog.New(slog.DiscardHandler),
				TLS:    &tls.Config{RootCAs: tt.roots, MinVersion: tls.VersionTLS12},
				Inject: []Injection{{Header: "Authorization", Template: "Bearer {secret}", Secret: &FileSecret{val: []byte(testToken)}}},
			}
			w := httptest.NewRecorder()
			r := httptest.NewRequest("GET", "http://api.test/", nil)
			routertest.AsRouter(p, w, r, router.Env{Sandbox: "web1"})
			if w.Code != tt.wantCode || w.Header().Get("X-Interceptd-Error") != tt.wantReason {
				t.Errorf("%d %q, want %d %q; body %q", w.Code, w.Header().Get("X-Interceptd-Error"), tt.wantCode, tt.wantReason, w.Body)
			}
			if got := reached.Load() > 0; got != tt.wantReached {
				t.Errorf("the upstream was reached: %v, want %v", got, tt.wantReached)
			}
			if strings.Contains(w.Body.String(), testToken) {
				t.Errorf("the answer holds the secret: %q", w.Body)
			}
		})
	}
}

// newTestCA makes a self-signed CA certificate of its own.
func newTestCA(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "interceptd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
