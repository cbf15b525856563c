package router

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// lockedBuffer is a log destination safe for the router's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRedecideCutsWhatIsNowDeniedOrServedElsewhereAndLogsEachCut(t *testing.T) {
	deny := policy.Decision{Result: policy.Deny, Reason: policy.ReasonNotAllowed}
	forward := policy.Decision{Result: policy.Forward, Reason: policy.ReasonInternet}
	tests := []struct {
		name       string
		sandbox    string // the tunnel's
		handler    string // now
		decision   policy.Decision
		wantReason string // "" when kept
	}{
		{"a tunnel the policy now denies is cut under the policy's reason", "s", LabelDeny, deny, policy.ReasonNotAllowed},
		{"a tunnel another handler would now serve is cut as rerouted", "s", LabelForward, policy.Decision{Result: policy.Handler, Reason: policy.ReasonHandler}, CutRerouted},
		{"a tunnel decided as before is kept", "s", "h", forward, ""},
		{"another sandbox's tunnel is not decided again", "other", LabelDeny, deny, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log lockedBuffer
			m := NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))
			rt := New(Config{Metrics: m, Logger: slog.New(slog.NewTextHandler(&log, nil))})
			cuts := 0
			tn := &tunnel{
				sandbox: tt.sandbox, host: "example.test", dest: netip.MustParseAddrPort("192.0.2.10:80"), handler: "h",
				redecide: func() (string, policy.Decision) { d := tt.decision; d.Detail = "why"; return tt.handler, d },
				cut:      func() { cuts++ },
			}
			ended := rt.openTunnel(tn)
			n := rt.Redecide("s")
			ended() // the owner notices the end
			want := 0
			if tt.wantReason != "" {
				want = 1
			}
			if n != want || cuts != want {
				t.Fatalf("Redecide said %d, cut called %d times, want %d", n, cuts, want)
			}
			if got := testutil.ToFloat64(m.tunnels.open); got != 0 {
				t.Errorf("open tunnels after the end: %v", got)
			}
			records := strings.Count(log.String(), `msg="tunnel cut"`)
			if records != want {
				t.Fatalf("%d cut records, want %d:\n%s", records, want, log.String())
			}
			if want == 0 {
				return
			}
			if got := testutil.ToFloat64(m.tunnels.cut.WithLabelValues(tt.wantReason)); got != 1 {
				t.Errorf("cuts with reason %s: %v", tt.wantReason, got)
			}
			for _, f := range []string{"sandbox=s", "host=example.test", "dest=192.0.2.10:80", "handler=h", "reason=" + tt.wantReason} {
				if !strings.Contains(log.String(), f) {
					t.Errorf("the record lacks %s: %s", f, log.String())
				}
			}
		})
	}
}

func TestRedecideIntoDecidesAgainEverySandboxsTunnelsToThatAddressOnly(t *testing.T) {
	deny := policy.Decision{Result: policy.Deny, Reason: policy.ReasonProtected}
	var log lockedBuffer
	m := NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))
	rt := New(Config{Metrics: m, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	cut := map[string]bool{}
	open := func(sandbox, dest string) {
		tn := &tunnel{
			sandbox: sandbox, host: dest, dest: netip.MustParseAddrPort(dest), handler: LabelForward,
			redecide: func() (string, policy.Decision) { return LabelDeny, deny },
			cut:      func() { cut[sandbox+">"+dest] = true },
		}
		t.Cleanup(rt.openTunnel(tn))
	}
	open("a", "10.213.0.2:443")
	open("b", "10.213.0.2:80")
	open("a", "10.213.0.6:443")
	open("b", "192.0.2.10:443")
	if n := rt.RedecideInto(netip.MustParseAddr("10.213.0.2")); n != 2 {
		t.Errorf("RedecideInto cut %d, want 2", n)
	}
	want := map[string]bool{"a>10.213.0.2:443": true, "b>10.213.0.2:80": true}
	if len(cut) != len(want) || !cut["a>10.213.0.2:443"] || !cut["b>10.213.0.2:80"] {
		t.Errorf("cut %v, want %v", cut, want)
	}
}
