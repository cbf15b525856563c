package router_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/router/routertest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const upgradeSecret = "s3cret-ws-token"

var upgradePolicy = policy.MustCompile(policy.Policy{Internet: true, DeniedHosts: []string{"denied.test", "192.0.2.9"}})

type fixedSecret string

func (s fixedSecret) Value(router.Env) ([]byte, error) { return []byte(s), nil }

// reflectingUpstream switches to "echo" only for a request that carries
// the injected credential, and tries every way a head can hand it back to
// the sandbox: a 103 before the 101, and the 101's own headers (plain and
// base64). After the 101 it echoes.
func reflectingUpstream(t *testing.T) netip.AddrPort {
	return routertest.RawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		auth := r.Header.Get("Authorization")
		if auth != "Bearer "+upgradeSecret || r.Header.Get("Upgrade") != "echo" {
			io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		b64 := base64.StdEncoding.EncodeToString([]byte(upgradeSecret))
		fmt.Fprintf(c, "HTTP/1.1 103 Early Hints\r\nX-Hint: %s\r\n\r\n", auth)
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Echo-Auth: %s\r\nX-Echo-B64: %s\r\n\r\n", auth, b64)
		io.Copy(c, br)
	})
}

// upgradeRouter serves a router whose host "p" is a proxy to up that
// injects upgradeSecret as a bearer token, "kv" a handler that cannot
// switch protocols and "blocked" a deny handler, with a decision log
// written to logs.
func upgradeRouter(t *testing.T, up netip.AddrPort, idle time.Duration, logs io.Writer) (string, *router.Metrics, *prometheus.Registry) {
	t.Helper()
	p := &handlers.Proxy{
		Name: "p", Upstream: &url.URL{Scheme: "http", Host: up.String()}, Logger: slog.New(slog.DiscardHandler),
		Inject: []handlers.Injection{{Header: "Authorization", Template: "Bearer {secret}", Secret: fixedSecret(upgradeSecret)}},
	}
	plain := router.HandlerFunc(func(w http.ResponseWriter, r *http.Request, env router.Env) error {
		io.WriteString(w, "a plain answer\n")
		return nil
	})
	reg := prometheus.NewRegistry()
	m := router.NewMetrics(reg, metrics.NewSandboxLabels(10))
	if logs == nil {
		logs = io.Discard
	}
	addr, _ := routertest.Serve(t, router.Config{
		Hosts: map[string]router.Route{
			"p":       {Name: "p", Handler: p},
			"kv":      {Name: "kv", Handler: plain},
			"respond": {Name: "respond", Handler: &handlers.Respond{Status: 200, Body: "stub\n"}},
			"blocked": {Name: "blocked", Handler: &handlers.Deny{}},
		},
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			return policy.Caller{Sandbox: "loop", Policy: upgradePolicy}, true
		},
		UpgradeIdleTimeout: idle,
		Metrics:            m,
		Logger:             slog.New(slog.NewJSONHandler(logs, nil)),
	})
	return addr, m, reg
}

// handshake sends an upgrade request for host and returns every head that
// came back up to the final one, as raw bytes, and the final status.
func handshake(t *testing.T, c net.Conn, br *bufio.Reader, host string) (heads string, status int) {
	t.Helper()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\nAuthorization: Bearer sandbox-own\r\n\r\n", host)
	var all strings.Builder
	for {
		var head bytes.Buffer
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the answer: %v (so far %q)", err, all.String()+head.String())
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		all.Write(head.Bytes())
		var code int
		fmt.Sscanf(head.String(), "HTTP/1.1 %d", &code)
		if code >= 200 || code == http.StatusSwitchingProtocols {
			return all.String(), code
		}
	}
}

func TestAProxyThatInjectsCarriesAnUpgradeAndNoHeadHandsTheSecretBack(t *testing.T) {
	var logs syncBuffer
	addr, m, reg := upgradeRouter(t, reflectingUpstream(t), 0, &logs)
	c := routertest.Dial(t, "", addr, 5*time.Second)
	br := bufio.NewReader(c)
	heads, status := handshake(t, c, br, "p")
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("got %d, want 101 (the upstream refuses without the injected token):\n%s", status, heads)
	}
	b64 := base64.StdEncoding.EncodeToString([]byte(upgradeSecret))
	if strings.Contains(heads, upgradeSecret) || strings.Contains(heads, b64) {
		t.Errorf("a head handed the injected secret back to the sandbox:\n%s", heads)
	}
	if !strings.Contains(heads, "X-Hint:") || !strings.Contains(heads, "X-Echo-Auth:") {
		t.Errorf("the heads lost the headers they should carry masked:\n%s", heads)
	}
	// The stream after the 101 is the upstream's, unchanged: bytes that
	// look like HTTP, or like the secret, pass as they are (documented:
	// the stream is not scrubbed).
	for _, msg := range []string{"hello", "HTTP/1.1 200 OK", upgradeSecret} {
		if err := echoes(c, br, msg); err != nil {
			t.Fatalf("the stream: %v", err)
		}
	}
	if got := testutil.ToFloat64(router.UpgradedOpen(m)); got != 1 {
		t.Errorf("upgraded connections open: %v, want 1", got)
	}
	streamed := float64(len("hello\n") + len("HTTP/1.1 200 OK\n") + len(upgradeSecret+"\n"))
	for _, dir := range []string{"from_sandbox", "to_sandbox"} {
		// Counted once the write returns, which may be after the client
		// has read the bytes: wait for it.
		waitFor(t, "the stream's bytes "+dir, func() bool { return testutil.ToFloat64(router.UpgradedBytes(m, dir)) >= streamed })
		if got := testutil.ToFloat64(router.UpgradedBytes(m, dir)); got != streamed {
			t.Errorf("upgraded bytes %s: %v, want %v (the stream's, not the heads')", dir, got, streamed)
		}
	}
	time.Sleep(500 * time.Millisecond) // a stream that lives longer than its handshake took
	c.Close()
	waitFor(t, "the open gauge back to 0", func() bool { return testutil.ToFloat64(router.UpgradedOpen(m)) == 0 })
	waitFor(t, "the upgrade counted as switched", func() bool {
		return testutil.ToFloat64(router.Upgrades(m, "other", router.UpgradeSwitched)) == 1
	})
	// The record is written when the stream ends: its status is the 101,
	// its duration the handshake's, and it says what the stream carried.
	rec := logs.record(t, "request")
	if rec["status"] != float64(101) || rec["upgrade_outcome"] != router.UpgradeSwitched ||
		rec["upgraded_bytes_in"] != streamed || rec["upgraded_bytes_out"] != streamed {
		t.Errorf("decision record: %v", rec)
	}
	if d, _ := rec["duration_ms"].(float64); d >= 500 {
		t.Errorf("duration_ms %v: the stream's life counted as request latency", d)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", problems, err)
	}
}

func TestAnUpgradeIsAnsweredByItsHandlersAbilityToSwitch(t *testing.T) {
	tests := []struct {
		name       string
		host       string
		wantStatus int
		wantReason string
		outcome    string
	}{
		{"a handler that cannot switch answers 400 upgrade_unsupported", "kv", 400, router.ReasonUpgradeUnsupported, router.UpgradeUnsupported},
		{"a respond handler answers 400 upgrade_unsupported", "respond", 400, router.ReasonUpgradeUnsupported, router.UpgradeUnsupported},
		// A deny handler is a handler answering: its 403 is no switch.
		{"a deny handler denies it as any request", "blocked", 403, policy.ReasonDenied, router.UpgradeNotSwitched},
		{"a host the policy denies is denied before any handler", "denied.test", 403, policy.ReasonDenied, router.UpgradeDenied},
		{"an IP-literal Host the policy denies is denied", "192.0.2.9", 403, policy.ReasonDenied, router.UpgradeDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			addr, m, _ := upgradeRouter(t, reflectingUpstream(t), 0, &logs)
			c := routertest.Dial(t, "", addr, 5*time.Second)
			fmt.Fprintf(c, "GET /k HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", tt.host)
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("X-Interceptd-Error") != tt.wantReason {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, resp.Header.Get("X-Interceptd-Error"), tt.wantStatus, tt.wantReason)
			}
			if tt.wantStatus == 400 {
				if !resp.Close {
					t.Error("the connection stays open after the refusal: frames sent behind the handshake would be read as a request")
				}
				if !strings.Contains(string(body), tt.wantReason) || !strings.Contains(string(body), tt.host) {
					t.Errorf("the body does not say why: %q", body)
				}
				if strings.Contains(string(body), "a plain answer") || strings.Contains(string(body), "stub") {
					t.Errorf("the handler ran: %q", body)
				}
			}
			waitFor(t, "the upgrade counted", func() bool {
				return testutil.ToFloat64(router.Upgrades(m, "websocket", tt.outcome)) == 1
			})
			rec := logs.record(t, "request")
			if rec["upgrade"] != "websocket" || rec["upgrade_outcome"] != tt.outcome || rec["status"] != float64(tt.wantStatus) {
				t.Errorf("decision record: %v", rec)
			}
		})
	}
}

func TestASwitchedConnectionIsCutWhenIdleAndNotWhileBytesPass(t *testing.T) {
	const idle = 300 * time.Millisecond
	addr, m, _ := upgradeRouter(t, reflectingUpstream(t), idle, nil)
	c := routertest.Dial(t, "", addr, 5*time.Second)
	br := bufio.NewReader(c)
	if _, status := handshake(t, c, br, "p"); status != 101 {
		t.Fatalf("got %d, want 101", status)
	}
	// Bytes every 100 ms for three idle timeouts: never idle that long.
	for i := 0; i < 9; i++ {
		time.Sleep(idle / 3)
		if err := echoes(c, br, "tick"); err != nil {
			t.Fatalf("a connection with bytes passing was cut after %v: %v", time.Duration(i+1)*idle/3, err)
		}
	}
	start := time.Now()
	if !cut(c, br) && !cut(c, br) {
		t.Fatal("an idle switched connection is still open after twice its idle timeout")
	}
	if took := time.Since(start); took < idle*2/3 {
		t.Errorf("cut %v after the last byte, before the idle timeout (%v)", took, idle)
	}
	if got := testutil.ToFloat64(router.TunnelsCut(m, router.CutIdle)); got != 1 {
		t.Errorf("cuts for idle_timeout: %v, want 1", got)
	}
	waitFor(t, "the open gauges back to 0", func() bool {
		return testutil.ToFloat64(router.UpgradedOpen(m)) == 0 && testutil.ToFloat64(router.TunnelsOpen(m)) == 0
	})
}

func TestBytesSentRightBehindTheHandshakeReachTheUpstream(t *testing.T) {
	addr, _, _ := upgradeRouter(t, reflectingUpstream(t), 0, nil)
	c := routertest.Dial(t, "", addr, 5*time.Second)
	br := bufio.NewReader(c)
	// One write: the head and the first line of the stream, as a client
	// that does not wait for the 101 sends them.
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: p\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	for err == nil && resp.StatusCode == http.StatusEarlyHints {
		resp, err = http.ReadResponse(br, &http.Request{Method: "GET"})
	}
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("got %v %v, want 101", resp, err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if got, err := br.ReadString('\n'); got != "early\n" {
		t.Errorf("echoed %q (%v): the bytes behind the handshake were lost", got, err)
	}
}

func TestANegativeIdleTimeoutNeverCuts(t *testing.T) {
	addr, m, _ := upgradeRouter(t, reflectingUpstream(t), -1, nil)
	c := routertest.Dial(t, "", addr, 5*time.Second)
	br := bufio.NewReader(c)
	if _, status := handshake(t, c, br, "p"); status != 101 {
		t.Fatalf("got %d, want 101", status)
	}
	time.Sleep(300 * time.Millisecond)
	if err := echoes(c, br, "still"); err != nil {
		t.Errorf("cut without an idle timeout: %v", err)
	}
	if got := testutil.ToFloat64(router.TunnelsCut(m, router.CutIdle)); got != 0 {
		t.Errorf("cuts for idle_timeout: %v", got)
	}
}

// waitFor polls cond for up to 2 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 2s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// syncBuffer is a log sink the server's goroutines write while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// record waits for the first JSON log record whose msg is msg.
func (s *syncBuffer) record(t *testing.T, msg string) map[string]any {
	t.Helper()
	var rec map[string]any
	waitFor(t, "a "+msg+" record", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, line := range strings.Split(s.b.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
				rec = m
				return true
			}
		}
		return false
	})
	return rec
}
