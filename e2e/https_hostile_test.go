package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// samePortScript opens two TLS connections for api.example.test from one
// source port (SO_REUSEADDR) to two destinations, as any process in a
// sandbox may. With ALPN http/1.1 it asks on the first connection once the
// second has closed; with h2 it opens both, then closes them in turn.
const samePortScript = `
import socket, ssl, sys, time
proto, ca = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols([proto])
def conn(dst, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('', port))
    s.settimeout(5)
    s.connect((dst, 443))
    return ctx.wrap_socket(s, server_hostname='api.example.test')
def ask(c, path):
    c.sendall(('GET %s HTTP/1.1\r\nHost: api.example.test\r\n\r\n' % path).encode())
    return c.recv(65536).decode(errors='replace').split('\r\n')[0]
a = conn('192.0.2.2', 0)
b = conn('192.0.2.3', a.getsockname()[1])
if proto == 'h2':
    for c in (a, b):
        c.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00')
        c.recv(65536)
    a.close()
    b.close()
    print('closed')
else:
    print('a', ask(a, '/a'))
    print('b', ask(b, '/b'))
    b.close()
    time.sleep(0.5)
    print('a again', ask(a, '/again'))
`

func TestTwoInterceptedConnectionsFromOneSourcePortAreEachTheirOwn(t *testing.T) {
	e, pemText, _ := newInterceptingEnv(t)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "interceptd-ca.pem")
	os.WriteFile(caFile, []byte(pemText), 0o644)
	script := filepath.Join(dir, "sameport.py")
	os.WriteFile(script, []byte(samePortScript), 0o644)
	sb := e.CreateWith("agent", "--internet", "off")

	// HTTP/1.1: the first connection is still served once the second,
	// from its port, is gone.
	out := e.MustIn(sb, "python3", script, "http/1.1", caFile)
	for _, want := range []string{"a HTTP/1.1 200", "b HTTP/1.1 200", "a again HTTP/1.1 200"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q:\n%s", want, out)
		}
	}
	// HTTP/2: both connections end in the daemon when the sandbox closes
	// them (else the first's would be held open forever, a slot of the
	// sandbox's connection cap and a goroutine each).
	if out := e.MustIn(sb, "python3", script, "h2", caFile); !strings.Contains(out, "closed") {
		t.Fatalf("h2: %s", out)
	}
	open := -1.0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if open = e.gauge("interceptd_tls_open_connections"); open == 0 {
			break
		}
	}
	if open != 0 {
		t.Errorf("%v TLS connections still open in the daemon after the sandbox closed both", open)
	}
}

func TestASandboxsHTTP2StreamsInFlightAreHeldToItsConnectionCap(t *testing.T) {
	cert, upstreamCA := testCA(t, "api.test")
	secretFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secretFile, []byte("s3cret-streams\n"), 0o600)
	e := NewEnv(t, Options{ExtraConfig: `handlers:
  - host: api.example.test
    kind: proxy
    https: true
    upstream: https://api.test:8443/
    ca_file: ` + upstreamCA + `
    inject:
      - {header: Authorization, template: "Bearer {secret}", file: ` + secretFile + `}
`})
	ln := e.ListenIn("/run/netns/"+e.UpNS, upstreamIP+":8443")
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Second) // a slow answer: the request stays in flight
			io.WriteString(w, "slow")
		}),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	pemText, errOut, code := e.CLI("ca", "--config", e.Config)
	if code != 0 {
		t.Fatalf("interceptd ca: %s", errOut)
	}
	caFile := filepath.Join(t.TempDir(), "interceptd-ca.pem")
	os.WriteFile(caFile, []byte(pemText), 0o644)

	sb := e.CreateWith("agent", "--internet", "off", "--max-conns", "3")
	// Eight requests at once, multiplexed by curl on one HTTP/2 connection.
	args := []string{"curl", "-sS", "-Z", "--http2", "--cacert", caFile, "-m", "10", "-w", "%{http_code} %{http_version}\n"}
	for i := range 8 {
		args = append(args, "-o", "/dev/null", fmt.Sprintf("https://api.example.test/slow/%d", i))
	}
	out, _ := e.In(sb, args...)
	ok, limited := strings.Count(out, "200 2"), strings.Count(out, "429 2")
	if ok+limited != 8 || ok > 3 || limited == 0 {
		t.Errorf("%d answered, %d refused with 429 over HTTP/2, want at most 3 answered (the cap) and the rest refused:\n%s", ok, limited, out)
	}
	if v, present := sample(e.Scrape(), "interceptd_tls_streams_refused_total"); !present || v != float64(limited) {
		t.Errorf("interceptd_tls_streams_refused_total = %v (present %v), want %d", v, present, limited)
	}
}
