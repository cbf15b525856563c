package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// httpsUpstreams serves HTTPS on :443 of both upstream addresses with a
// certificate of the test's own CA for the test's names, and returns the
// CA's file (what clients in sandboxes trust) and how many requests came.
func (e *Env) httpsUpstreams(t *testing.T) (caFile string, reached *atomic.Int32) {
	t.Helper()
	cert, caFile := testCA(t, "api.test", "example.test", "other.test")
	reached = &atomic.Int32{}
	for _, a := range []string{upstreamIP + ":443", otherIP + ":443"} {
		ln := e.ListenIn("/run/netns/"+e.UpNS, a)
		srv := &http.Server{
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reached.Add(1)
				fmt.Fprintf(w, "tls upstream %s: %s %s %s", a, r.Proto, r.TLS.ServerName, r.URL.Path)
			}),
		}
		go srv.ServeTLS(ln, "", "")
		t.Cleanup(func() { srv.Close() })
	}
	return caFile, reached
}

// tlsRecord finds the daemon's tls decision record for sandbox with reason.
func tlsRecord(log, sandbox, reason string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "msg=tls ") && strings.Contains(l, "sandbox="+sandbox+" ") && strings.Contains(l, "reason="+reason) {
			return l
		}
	}
	return ""
}

// waitTLSRecord waits a moment for a decision record: the daemon resets a
// refused connection first and logs after, so a client can return before
// its record is written.
func (e *Env) waitTLSRecord(sandbox, reason string) string {
	deadline := time.Now().Add(3 * time.Second)
	for {
		rec := tlsRecord(e.Log(), sandbox, reason)
		if rec != "" || time.Now().After(deadline) {
			return rec
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPort443IsDecidedByTheSNIAndPassedThroughUntouched(t *testing.T) {
	e := NewEnv(t, Options{})
	caFile, reached := e.httpsUpstreams(t)
	sb := e.CreateWith("agent", "--internet", "off", "--allow", "api.test")

	// An allowed name passes; the client validates the upstream's own
	// certificate (the daemon holds no key for it), HTTP/2 and HTTP/1.1.
	for _, proto := range []string{"--http2", "--http1.1"} {
		out := e.MustIn(sb, "curl", "-sS", "-m", "5", proto, "--cacert", caFile, "https://api.test/p")
		want := "tls upstream " + upstreamIP + ":443: HTTP/2.0 api.test /p"
		if proto == "--http1.1" {
			want = "tls upstream " + upstreamIP + ":443: HTTP/1.1 api.test /p"
		}
		if out != want {
			t.Errorf("curl %s: %q, want %q", proto, out, want)
		}
	}
	// Python's urllib, with the system's TLS stack and its own SNI.
	py := `import ssl, urllib.request
ctx = ssl.create_default_context(cafile="` + caFile + `")
print(urllib.request.urlopen("https://api.test/py", context=ctx, timeout=5).read().decode())`
	if out := strings.TrimSpace(e.MustIn(sb, "python3", "-c", py)); out != "tls upstream "+upstreamIP+":443: HTTP/1.1 api.test /py" {
		t.Errorf("python urllib: %q", out)
	}
	if rec := e.waitTLSRecord("agent", "allowed"); !strings.Contains(rec, "sni=api.test") || !strings.Contains(rec, "outcome=passthrough") {
		t.Errorf("no passthrough record naming the SNI:\n%s", e.Log())
	}

	before := reached.Load()
	tests := []struct {
		name   string
		args   []string
		reason string
	}{
		// The daemon's DNS will not answer for example.test; the sandbox
		// hard-codes its address (the allowed name's own): the hello's
		// name is refused, never reaching the upstream.
		{"a name off the allowlist at a hard-coded address", []string{"--cacert", caFile, "--resolve", "example.test:443:" + upstreamIP, "https://example.test/"}, "not_allowed"},
		// An allowed name sent to an address that is not its own.
		{"an allowed name at another address", []string{"--cacert", caFile, "--resolve", "api.test:443:" + otherIP, "https://api.test/"}, "sni_mismatch"},
		// An IP literal sends no SNI: the address decides, and the
		// allowlist opens no address.
		{"no SNI to the allowed name's own address", []string{"-k", "https://" + upstreamIP + "/"}, "not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.curlTimed(sb, append([]string{"-m", "5"}, tt.args...)...)
			// 35: the handshake failed (reset); 56: a receive failure
			// (reset); never 28, a timeout.
			if r.Exit != 35 && r.Exit != 56 || r.Took > atOnce {
				t.Errorf("curl exit %d after %v, want a reset at once:\n%s", r.Exit, r.Took, r.Out)
			}
		})
		if rec := e.waitTLSRecord("agent", tt.reason); !strings.Contains(rec, "outcome=refused") || !strings.Contains(rec, "request_id=") {
			t.Errorf("%s: no refusal record with reason %s:\n%s", tt.name, tt.reason, e.Log())
		}
	}
	if n := reached.Load(); n != before {
		t.Errorf("refused connections reached the upstream %d times", n-before)
	}
	// openssl s_client naming a name the policy denies, at the allowed
	// name's address: the SNI decides, not the address.
	refusedBefore := strings.Count(e.Log(), "sni=example.test dest="+upstreamIP+":443 hello=sni decision=deny reason=not_allowed outcome=refused")
	out, code := e.In(sb, "openssl", "s_client", "-connect", upstreamIP+":443", "-servername", "example.test")
	if code == 0 || strings.Contains(out, "BEGIN CERTIFICATE") || strings.Contains(out, "Server certificate") {
		t.Errorf("openssl s_client with a denied SNI got a handshake (exit %d):\n%s", code, out)
	}
	if n := e.waitLogCount("sni=example.test dest="+upstreamIP+":443 hello=sni decision=deny reason=not_allowed outcome=refused", refusedBefore+1); n != refusedBefore+1 {
		t.Errorf("openssl's connection has no refusal record (%d, %d before):\n%s\n%s", n, refusedBefore, out, e.Log())
	}

	// Internet on: no SNI to a plain address passes (the address policy).
	open := e.CreateWith("open")
	if out := e.MustIn(open, "curl", "-sS", "-m", "5", "-k", "https://"+upstreamIP+"/raw"); out != "tls upstream "+upstreamIP+":443: HTTP/2.0  /raw" {
		t.Errorf("no SNI, internet on: %q", out)
	}

	m := e.Scrape()
	for series, min := range map[string]float64{
		`interceptd_tls_connections_total{outcome="passthrough"}`:                                               4,
		`interceptd_tls_connections_total{outcome="refused"}`:                                                   4,
		`interceptd_tls_hellos_total{kind="no_sni"}`:                                                            2,
		`interceptd_policy_decisions_total{protocol="tls",reason="sni_mismatch",result="deny",sandbox="agent"}`: 1,
	} {
		if v, ok := sample(m, series); !ok || v < min {
			t.Errorf("%s = %v (present %v), want at least %v", series, v, ok, min)
		}
	}
}

func TestAHandlersNameOnPort443IsRefusedUntilItIsMarkedForHTTPS(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("web")
	r := e.curlTimed(sb, "-m", "5", "-k", "https://my.kv/k")
	if r.Exit != 35 && r.Exit != 56 || r.Took > atOnce {
		t.Errorf("https to a handler: curl exit %d after %v:\n%s", r.Exit, r.Took, r.Out)
	}
	if rec := e.waitTLSRecord("web", "handler_not_https"); !strings.Contains(rec, "sni=my.kv") {
		t.Errorf("no handler_not_https record:\n%s", e.Log())
	}
}

func TestQUICIsRefusedAtOnceUnlessAnAddressEntryOpensIt(t *testing.T) {
	e := NewEnv(t, Options{})
	var got atomic.Int32
	for _, a := range []string{upstreamIP + ":443", otherIP + ":443"} {
		var pc net.PacketConn
		if err := inNetns("/run/netns/"+e.UpNS, func() (err error) { pc, err = net.ListenPacket("udp4", a); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			b := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(b)
				if err != nil {
					return
				}
				got.Add(1)
				pc.WriteTo(b[:n], from)
			}
		}()
	}
	sb := e.Create("quic")
	opened := e.CreateWith("opened", "--allow", otherIP+"/32")
	// A connected UDP socket sees the ICMP refusal as an error on its next
	// receive: at once, not after the timeout.
	probe := func(addr string) string {
		return `import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("` + addr + `", 443))
start = time.time()
try:
    s.send(b"\xc0quic-initial")
    s.recv(2048)
    print("answered")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("refused %.1f" % (time.time() - start))`
	}
	if out := strings.TrimSpace(e.MustIn(sb, "python3", "-c", probe(upstreamIP))); !strings.HasPrefix(out, "refused 0.") && !strings.HasPrefix(out, "refused 1.") {
		t.Errorf("QUIC from a sandbox: %q, want refused at once", out)
	}
	if n := got.Load(); n != 0 {
		t.Errorf("the upstream got %d QUIC datagrams", n)
	}
	if out := strings.TrimSpace(e.MustIn(opened, "python3", "-c", probe(otherIP))); out != "answered" {
		t.Errorf("QUIC to an address an IP/CIDR entry opens: %q", out)
	}
	// The kernel hands logged packets over in batches, a second apart at
	// most: wait for the record.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(e.Log(), "reason=quic_refused") && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	if rec := e.Log(); !strings.Contains(rec, `msg="refused flow" sandbox=quic proto=udp dest=`+upstreamIP+`:443 decision=deny reason=quic_refused`) {
		t.Errorf("the refusal was not logged:\n%s", e.Log())
	}
}

func TestWhileTheDaemonIsDownPort443IsResetAtOnceAndWorksAgainAfter(t *testing.T) {
	e := NewEnv(t, Options{})
	caFile, _ := e.httpsUpstreams(t)
	sb := e.Create("web")
	url := "https://api.test/"
	e.MustIn(sb, "curl", "-sS", "-m", "5", "--cacert", caFile, url)
	rules := ruleCount(t, e)
	e.Stop()
	// No DNS while the daemon is down: the name is given to curl.
	r := e.curlTimed(sb, "-m", "5", "--cacert", caFile, "--resolve", "api.test:443:"+upstreamIP, url)
	if r.Exit != 7 || r.Took > atOnce {
		t.Errorf("https while the daemon was down: curl exit %d after %v, want 7 (reset) at once:\n%s", r.Exit, r.Took, r.Out)
	}
	e.Start()
	if out := e.MustIn(sb, "curl", "-sS", "-m", "5", "--cacert", caFile, url); !strings.HasPrefix(out, "tls upstream") {
		t.Errorf("after the restart: %q", out)
	}
	if got := ruleCount(t, e); got != rules {
		t.Errorf("%d rules after the restart, %d before", got, rules)
	}
}

func TestAnInterceptedHTTPSHandlerInjectsATokenTheSandboxNeverSees(t *testing.T) {
	// The daemon's CA, as `interceptd ca` prints it, is what the client
	// trusts (interceptd run sets it up for a whole container).
	e, pemText, seenAuth := newInterceptingEnv(t)
	caFile := filepath.Join(t.TempDir(), "interceptd-ca.pem")
	os.WriteFile(caFile, []byte(pemText), 0o644)

	sb := e.CreateWith("agent", "--internet", "off")
	for _, proto := range []string{"--http2", "--http1.1"} {
		out, code := e.In(sb, "curl", "-sS", "-i", "-m", "5", proto, "--cacert", caFile, "https://api.example.test/repos")
		if code != 0 || !strings.Contains(out, " 200") || !strings.Contains(out, "upstream /v1/repos saw") {
			t.Fatalf("curl %s (exit %d):\n%s", proto, code, out)
		}
		if strings.Contains(out, "s3cret") {
			t.Errorf("curl %s: the sandbox saw the token:\n%s", proto, out)
		}
		if got := seenAuth(); got != "Bearer s3cret-https" {
			t.Errorf("curl %s: the upstream got Authorization %q", proto, got)
		}
		if proto == "--http2" && !strings.HasPrefix(out, "HTTP/2 200") {
			t.Errorf("not HTTP/2:\n%s", out)
		}
	}
	if rec := e.waitTLSRecord("agent", "handler"); !strings.Contains(rec, "outcome=intercepted") || !strings.Contains(rec, "sni=api.example.test") {
		t.Errorf("no intercepted record:\n%s", e.Log())
	}
	// A connection made for the handler cannot carry a request elsewhere.
	out, _ := e.In(sb, "curl", "-sS", "-i", "-m", "5", "--cacert", caFile, "-H", "Host: example.test", "https://api.example.test/")
	if !strings.Contains(out, " 421") || !strings.Contains(out, "misdirected_request") {
		t.Errorf("another Host on an intercepted connection:\n%s", out)
	}
	// A client that does not trust the CA fails its handshake, and is
	// counted and logged; the daemon serves on.
	r := e.curlTimed(sb, "-m", "5", "https://api.example.test/repos")
	if r.Exit != 60 && r.Exit != 35 {
		t.Errorf("an untrusting client: curl exit %d:\n%s", r.Exit, r.Out)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(e.Log(), "tls_reason=tls_untrusted") && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(e.Log(), "tls_reason=tls_untrusted") {
		t.Errorf("the untrusting client was not logged:\n%s", e.Log())
	}
	if out := e.MustIn(sb, "curl", "-sS", "-m", "5", "--cacert", caFile, "https://api.example.test/again"); !strings.Contains(out, "upstream /v1/again") {
		t.Errorf("after the untrusting client: %q", out)
	}
	m := e.Scrape()
	for series, min := range map[string]float64{
		`interceptd_tls_connections_total{outcome="intercepted"}`: 3,
		`interceptd_tls_connections_total{outcome="untrusted"}`:   1,
		`interceptd_tls_certificates_total{source="minted"}`:      1,
	} {
		if v, ok := sample(m, series); !ok || v < min {
			t.Errorf("%s = %v (present %v), want at least %v", series, v, ok, min)
		}
	}
	if st, err := os.Stat(filepath.Join(e.Dir, "data", "ca", "ca-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the CA key: %v %v", err, st)
	}
}

func TestAWorkerMarkedHTTPSAnswersHTTPSAndInjectsATokenTheSandboxNeverSees(t *testing.T) {
	cert, upstreamCA := testCA(t, "api.test")
	dir := t.TempDir()
	script := filepath.Join(dir, "gh.js")
	os.WriteFile(script, []byte(`export default { outboundByHost: {
  "gh.test": (request, env) => {
    const url = new URL(request.url);
    const r = new Request("https://api.test:8443" + url.pathname, request);
    r.headers.set("Authorization", "Bearer " + env.TOKEN);
    r.headers.set("X-Seen-Url", request.url);
    return fetch(r);
  },
} };`), 0o644)
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("wk-https-7777"), 0o600)
	e := NewEnv(t, Options{ExtraConfig: fmt.Sprintf(`workers:
  - name: gh
    script: %s
    ca_file: %s
    https: true
    bindings:
      TOKEN: { secret: %s }
default_worker: gh
`, script, upstreamCA, token)})
	ln := e.ListenIn("/run/netns/"+e.UpNS, upstreamIP+":8443")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s for %s as %s", r.Header.Get("Authorization"), r.URL.Path, r.Header.Get("X-Seen-Url"))
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	pemText, _, code := e.CLI("ca", "--config", e.Config)
	if code != 0 {
		t.Fatal("interceptd ca failed")
	}
	caFile := filepath.Join(dir, "interceptd-ca.pem")
	os.WriteFile(caFile, []byte(pemText), 0o644)

	sb := e.Create("agent1")
	got := e.MustIn(sb, "curl", "-sS", "-m", "10", "--cacert", caFile, "https://gh.test/user")
	// The upstream echoed the token; the sandbox sees it masked, and the
	// function saw an https:// URL.
	if want := "Bearer ************* for /user as https://gh.test/user"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if rec := e.waitTLSRecord("agent1", "handler"); !strings.Contains(rec, "sni=gh.test") || !strings.Contains(rec, "outcome=intercepted") {
		t.Errorf("no intercepted record for the worker's name:\n%s", e.Log())
	}
}
