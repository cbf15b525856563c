// Package metrics builds the daemon's Prometheus registry and serves it.
//
// Every package that handles traffic owns its metrics in its own metrics.go and
// registers them on the registry made here, so tests can read a fresh registry
// per daemon. Names follow interceptd_<subsystem>_<name>_<unit>, and label
// values come from closed sets only: never an IP, a query name, a path or a Host.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process collectors
// and interceptd_build_info, whose version label is version (the caller
// says which build runs: see internal/buildinfo).
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "interceptd", Name: "build_info",
			Help:        "Always 1; the version label says which build runs.",
			ConstLabels: prometheus.Labels{"version": version},
		}, func() float64 { return 1 }),
	)
	return reg
}

// Server serves /metrics for a registry, and the health endpoints a
// supervisor probes (Kubernetes' liveness and readiness probes):
//
//	GET /healthz → 200 "ok" while the daemon lives (its live check passes);
//	               also while it starts, so a slow start is not a restart
//	GET /readyz  → 200 "ok" once the daemon is ready (SetProbes) and its
//	               ready check passes; 503 with the reason otherwise
type Server struct {
	srv    *http.Server
	ln     net.Listener
	probes atomic.Pointer[probes]
}

type probes struct{ live, ready func() error }

// SetProbes makes /healthz answer live's verdict and /readyz ready's: the
// daemon calls it once every listener is up. Before it, /healthz answers
// 200 and /readyz 503 "starting".
func (s *Server) SetProbes(live, ready func() error) {
	s.probes.Store(&probes{live: live, ready: ready})
}

func (s *Server) probe(ready bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		p := s.probes.Load()
		var err error
		switch {
		case p == nil && ready:
			err = errors.New("starting")
		case p == nil:
		case ready && p.ready != nil:
			err = p.ready()
		case !ready && p.live != nil:
			err = p.live()
		}
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ok: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}

// Listen binds addr and returns a server ready to Serve.
// With pprof, /debug/pprof/ is served too (profiling the daemon).
func Listen(addr string, g prometheus.Gatherer, pprof bool) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w", addr, err)
	}
	s := &Server{ln: ln}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slogAdapter{}}))
	mux.Handle("GET /healthz", s.probe(false))
	mux.Handle("GET /readyz", s.probe(true))
	if pprof {
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", httppprof.Trace)
	}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics: %w", err)
	}
	return nil
}

// Shutdown stops the server.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

type slogAdapter struct{}

func (slogAdapter) Println(v ...any) { slog.Error("metrics", "error", fmt.Sprint(v...)) }

// CodeLabel maps an HTTP status code to a bounded label value: the code
// itself when it is a valid status, else "other".
func CodeLabel(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return strconv.Itoa(code)
}
