package e2e

import (
	"compress/flate"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testCA makes a CA and a server certificate for names, and writes the CA
// certificate to a PEM file.
func testCA(t *testing.T, names ...string) (tls.Certificate, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "interceptd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, path
}

func TestTheProxyInjectsCredentialsTheSandboxNeverSees(t *testing.T) {
	cert, caFile := testCA(t, "api.test")
	secretFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secretFile, []byte("s3cret-v1\n"), 0o600)
	cfg := `handlers:
  - {host: "*", kind: respond, body: "catch-all\n"}
  - {host: my.kv, kind: kv}
  - host: api.example.test
    kind: proxy
    upstream: https://api.test:8443/v1
    ca_file: ` + caFile + `
    set_headers: {X-Proxied-By: interceptd}
    remove_headers: [Cookie]
    inject:
      - {header: Authorization, template: "Bearer {secret}", file: ` + secretFile + `}
      - {header: X-Sandbox-Token, kv_namespace: tokens}
  - {host: stub.test, kind: respond, status: 201, headers: {X-Stub: "yes"}, body: "stubbed\n"}
  - {host: blocked.test, kind: deny}
`
	e := NewEnv(t, Options{ExtraConfig: cfg})
	// The TLS upstream, in the upstream namespace: it echoes what it got,
	// secrets included, as a careless or hostile API might.
	var mu sync.Mutex
	var seenH http.Header
	seen := func() http.Header { mu.Lock(); defer mu.Unlock(); return seenH }
	ln := e.ListenIn("/run/netns/"+e.UpNS, upstreamIP+":8443")
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seenH = r.Header.Clone()
			mu.Unlock()
			w.Header().Set("X-Echo-Auth", r.Header.Get("Authorization"))
			json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "host": r.Host, "headers": r.Header})
		}),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	sb := e.Create("agent")
	if _, errOut, code := e.CLI("kv", "put", "--namespace", "tokens", "agent", "tok-agent"); code != 0 {
		t.Fatalf("seeding the per-sandbox secret: %s", errOut)
	}
	get := func(sb Sandbox) (string, int) {
		return e.In(sb, "curl", "-sS", "-i", "-m", "5", "-H", "Authorization: Bearer container-made-this-up", "-H", "Cookie: a=b", "http://api.example.test/repos?x=1")
	}
	out, code := get(sb)
	if code != 0 || !strings.Contains(out, "HTTP/1.1 200") {
		t.Fatalf("proxy request (exit %d):\n%s", code, out)
	}
	checks := []struct{ what, got, want string }{
		{"Authorization at the upstream", seen().Get("Authorization"), "Bearer s3cret-v1"},
		{"the per-sandbox token at the upstream", seen().Get("X-Sandbox-Token"), "tok-agent"},
		{"a set header", seen().Get("X-Proxied-By"), "interceptd"},
		{"a removed header", seen().Get("Cookie"), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if !strings.Contains(out, `"path":"/v1/repos"`) || !strings.Contains(out, `"host":"api.test:8443"`) {
		t.Errorf("the upstream URL was not the configured one:\n%s", out)
	}
	for _, secret := range []string{"s3cret-v1", "tok-agent"} {
		if strings.Contains(out, secret) {
			t.Errorf("the sandbox saw the secret %q:\n%s", secret, out)
		}
	}
	if strings.Contains(e.Log(), "s3cret") || strings.Contains(e.Scrape(), "s3cret") {
		t.Error("a secret reached the log or the metrics")
	}

	t.Run("a changed secret file is picked up on SIGHUP", func(t *testing.T) {
		os.WriteFile(secretFile, []byte("s3cret-v2\n"), 0o600)
		e.daemon.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(5 * time.Second)
		for seen().Get("Authorization") != "Bearer s3cret-v2" && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			out, _ = get(sb)
		}
		if seen().Get("Authorization") != "Bearer s3cret-v2" || strings.Contains(out, "s3cret-v2") {
			t.Errorf("after SIGHUP the upstream saw %q; the sandbox got:\n%s", seen().Get("Authorization"), out)
		}
	})
	t.Run("a sandbox without a per-sandbox secret gets a 502 that names no secret", func(t *testing.T) {
		other := e.Create("unseeded")
		out, _ := get(other)
		if !strings.Contains(out, "HTTP/1.1 502") || !strings.Contains(out, "credential for X-Sandbox-Token is unavailable") || strings.Contains(out, "s3cret") {
			t.Errorf("got:\n%s", out)
		}
	})
	t.Run("respond, deny and the catch-all, whatever their order", func(t *testing.T) {
		for url, want := range map[string]string{
			"http://stub.test/x":      "201 stubbed\n",
			"http://blocked.test/":    "403 ",
			"http://example.test/any": "200 catch-all\n",
			"http://my.kv/missing":    "404 interceptd: key not found\n",
		} {
			out, _ := e.In(sb, "curl", "-sS", "-m", "5", "-w", "%{http_code} ", "-o", "/dev/stderr", url)
			// -o /dev/stderr then -w: body first, code after; rebuild "code body".
			code := out[len(out)-4:]
			body := out[:len(out)-4]
			if got := strings.TrimSpace(code) + " " + body; !strings.HasPrefix(got, want) {
				t.Errorf("%s: got %q, want %q", url, got, want)
			}
		}
	})
}

// reencodings are the forms in which an upstream might hand an injected
// secret back without meaning to hide it: as it is, base64 (of the secret
// and of "user:secret", as Basic carries it), URL-encoded with either case of
// hex digits, hex in either case, JSON-escaped, and upper- and lower-cased.
func reencodings(secret string) []string {
	q := url.QueryEscape(secret)
	js, _ := json.Marshal(secret)
	return []string{
		secret,
		base64.StdEncoding.EncodeToString([]byte(secret)),
		base64.RawURLEncoding.EncodeToString([]byte(secret)),
		base64.StdEncoding.EncodeToString([]byte("x-access-token:" + secret)),
		base64.StdEncoding.EncodeToString([]byte("Bearer " + secret)),
		q,
		url.PathEscape(secret),
		regexp.MustCompile(`%[0-9A-F]{2}`).ReplaceAllStringFunc(q, strings.ToLower),
		hex.EncodeToString([]byte(secret)),
		strings.ToUpper(hex.EncodeToString([]byte(secret))),
		strings.Trim(strings.ReplaceAll(string(js), "/", `\/`), `"`),
		strings.ToUpper(secret),
		strings.ToLower(secret),
	}
}

// reflectedSecrets is what a careless or hostile upstream can find in the
// request's Authorization: the Bearer token, or Basic's encoded user:password,
// the pair decoded and the password alone.
func reflectedSecrets(auth string) []string {
	if tok, ok := strings.CutPrefix(auth, "Bearer "); ok {
		return []string{tok}
	}
	if b, ok := strings.CutPrefix(auth, "Basic "); ok {
		pair, _ := base64.StdEncoding.DecodeString(b)
		_, pass, _ := strings.Cut(string(pair), ":")
		return []string{b, string(pair), pass}
	}
	return nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// reflectingUpstream hands the injected Authorization back, in every
// re-encoding, wherever the path says: /early in a 103 Early Hints head,
// /final in the final head (as values and as a field name), /trailer in
// chunked trailers (declared and undeclared), /split in a body written in
// two flushes that split every form in the middle, /body in one write,
// /gzip, /deflate and /br in a body in that content coding.
func reflectingUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var forms []string
		for _, s := range reflectedSecrets(r.Header.Get("Authorization")) {
			forms = append(forms, reencodings(s)...)
		}
		forms = append(forms, r.Header.Get("Authorization"))
		h := w.Header()
		fc := http.NewResponseController(w)
		switch r.URL.Path {
		case "/early":
			h.Set("Link", "</style.css>; rel=preload; as=style")
			h["X-Early-Auth"] = forms
			h.Set(hex.EncodeToString([]byte(forms[0])), "a field named after the secret")
			w.WriteHeader(http.StatusEarlyHints)
			clear(h)
			io.WriteString(w, "final\n")
		case "/final":
			h["X-Echo-Auth"] = forms
			h.Set(hex.EncodeToString([]byte(forms[0])), "a field named after the secret")
			io.WriteString(w, "final\n")
		case "/trailer":
			h.Set("Trailer", "X-Trailer-Auth")
			io.WriteString(w, "body before the trailers\n")
			fc.Flush()
			h["X-Trailer-Auth"] = forms
			h[http.TrailerPrefix+"X-Late-Auth"] = forms
		case "/split":
			for _, f := range forms {
				io.WriteString(w, f[:len(f)/2])
				fc.Flush()
				time.Sleep(20 * time.Millisecond)
				io.WriteString(w, f[len(f)/2:]+"\n")
				fc.Flush()
			}
		case "/body":
			io.WriteString(w, strings.Join(forms, "\n")+"\n")
		case "/gzip", "/deflate", "/br":
			// Compressed although the proxy asked for identity, as
			// an always-on compression middleware does.
			h.Set("Content-Encoding", r.URL.Path[1:])
			var zw io.WriteCloser
			switch r.URL.Path {
			case "/gzip":
				zw = gzip.NewWriter(w)
			case "/deflate":
				zw, _ = flate.NewWriter(w, flate.BestSpeed)
			default: // no brotli in the standard library: the coding is only claimed
				zw = nopWriteCloser{w}
			}
			io.WriteString(zw, strings.Join(forms, "\n")+"\n")
			zw.Close()
		}
	})
}

func TestTheProxyScrubsReflectedSecretsFromEveryPartOfTheResponse(t *testing.T) {
	const token = "s3cr3t+tok/en=v1"
	basic := base64.StdEncoding.EncodeToString([]byte("agent:pa55-w0rd!x"))
	dir := t.TempDir()
	tokenFile, basicFile := filepath.Join(dir, "token"), filepath.Join(dir, "basic")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	os.WriteFile(basicFile, []byte(basic+"\n"), 0o600)
	cfg := `handlers:
  - host: bearer.example.test
    kind: proxy
    upstream: http://` + upstreamIP + `:8089
    inject:
      - {header: Authorization, template: "Bearer {secret}", file: ` + tokenFile + `}
  - host: basic.example.test
    kind: proxy
    upstream: http://` + upstreamIP + `:8089
    inject:
      - {header: Authorization, template: "Basic {secret}", file: ` + basicFile + `}
`
	e := NewEnv(t, Options{ExtraConfig: cfg})
	srv := &http.Server{Handler: reflectingUpstream()}
	go srv.Serve(e.ListenIn("/run/netns/"+e.UpNS, upstreamIP+":8089"))
	t.Cleanup(func() { srv.Close() })
	sb := e.Create("agent")

	var never []string
	for _, s := range append(reflectedSecrets("Bearer "+token), reflectedSecrets("Basic "+basic)...) {
		never = append(never, reencodings(s)...)
	}
	// want is in the joined view, wantRaw in the raw one: what shows the
	// part of the answer under test did arrive.
	tests := []struct {
		name, path, want string
		wantRaw          []string
	}{
		{"in a 103 Early Hints head", "/early", "HTTP/1.1 103", []string{"\nX-Early-Auth: **"}},
		{"in the final head, as values and as a field name", "/final", "HTTP/1.1 200", []string{"\nX-Echo-Auth: **"}},
		{"in chunked trailers, declared and not", "/trailer", "body before the trailers", []string{"\r\n0\r\n", "\nX-Trailer-Auth: **", "\nX-Late-Auth: **"}},
		{"in a body that splits the secret between two reads", "/split", "HTTP/1.1 200", []string{"***"}},
		{"in a body, re-encoded", "/body", "HTTP/1.1 200", []string{"***"}},
		{"in a gzip body sent although identity was asked for", "/gzip", "HTTP/1.1 200", []string{"***"}},
		{"in a deflate body sent although identity was asked for", "/deflate", "HTTP/1.1 200", []string{"***"}},
		{"in a body in a coding the proxy cannot undo", "/br", "HTTP/1.1 502", []string{"cannot be scrubbed"}},
	}
	for _, tt := range tests {
		for _, host := range []string{"bearer.example.test", "basic.example.test"} {
			t.Run(tt.name+" for "+strings.Split(host, ".")[0], func(t *testing.T) {
				// Two views of the same answer: --raw shows the chunk
				// framing and trailers as they came; without it curl
				// joins the chunks and undoes a content coding, as a
				// client reading the body does.
				raw, code := e.In(sb, "curl", "-sS", "-i", "--raw", "-m", "10", "http://"+host+tt.path)
				joined, code2 := e.In(sb, "curl", "-sS", "-i", "--compressed", "-m", "10", "http://"+host+tt.path)
				out := raw + "\n--- joined ---\n" + joined
				if code != 0 || code2 != 0 || !strings.Contains(joined, tt.want) {
					t.Fatalf("curl %s%s (exit %d, %d): no %q in\n%s", host, tt.path, code, code2, tt.want, out)
				}
				for _, w := range tt.wantRaw {
					if !strings.Contains(raw, w) {
						t.Errorf("no %q in\n%s", w, out)
					}
				}
				var seen []string
				for _, f := range never {
					if strings.Contains(out, f) {
						seen = append(seen, f)
					}
				}
				if len(seen) > 0 {
					t.Errorf("the sandbox saw %d forms of the secret %q in:\n%s", len(seen), seen, out)
				}
			})
		}
	}
	if strings.Contains(e.Log(), token) || strings.Contains(e.Log(), basic) {
		t.Error("a secret reached the log")
	}
}
