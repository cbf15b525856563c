package metrics

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestTheHealthEndpointsSayLiveAndReadyAsTheDaemonDoes(t *testing.T) {
	s, err := Listen("127.0.0.1:0", prometheus.NewRegistry(), false)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + s.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var liveErr, readyErr error
	steps := []struct {
		name      string
		do        func()
		live      int
		ready     int
		readyBody string
	}{
		{"while the daemon starts it lives but is not ready", func() {}, 200, 503, "starting"},
		{"once its listeners are up it is both", func() {
			s.SetProbes(func() error { return liveErr }, func() error { return readyErr })
		}, 200, 200, "ok"},
		{"a failing ready check takes it out of service only", func() { readyErr = errors.New("store: unreachable") }, 200, 503, "store: unreachable"},
		{"a failing live check fails both probes' owner: liveness", func() { liveErr = errors.New("admin socket: refused") }, 503, 503, "store: unreachable"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do()
			if code, body := get("/healthz"); code != st.live {
				t.Errorf("/healthz: %d %q, want %d", code, body, st.live)
			}
			if code, body := get("/readyz"); code != st.ready || !strings.Contains(body, st.readyBody) {
				t.Errorf("/readyz: %d %q, want %d containing %q", code, body, st.ready, st.readyBody)
			}
		})
	}
}
