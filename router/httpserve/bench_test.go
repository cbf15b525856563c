package httpserve_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/router/routertest"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkDispatchThroughTheLeanLoop answers kept-alive GETs from handlers
// in the daemon, as the benchmark's floor and KV paths do: the lean loop,
// the router with its metrics, and the handler, with a loopback client.
// The difference between a case and the fixed response is what its
// handler costs.
func BenchmarkDispatchThroughTheLeanLoop(b *testing.B) {
	db, err := store.Open(b.TempDir(), &store.Options{Metrics: store.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	kv := &handlers.KV{Store: backend.Bolt(db), Kind: store.KindKV, Namespace: "default", Limits: store.Limits{}.WithDefaults()}
	state := &handlers.KV{Store: backend.Bolt(db), Kind: store.KindState, Namespace: "default", PerSandbox: true, Transactions: true, Limits: store.Limits{}.WithDefaults()}
	m := router.NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))
	addr, _ := routertest.ServeRoutes(b, m, map[string]router.Route{
		"floor":    {Name: "floor", Handler: &handlers.Respond{Body: "ok"}},
		"my.kv":    {Name: "my.kv", Handler: kv},
		"state.do": {Name: "state.do", Handler: state},
	})
	for _, host := range []string{"my.kv", "state.do"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		io.WriteString(c, "PUT /hot HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode != http.StatusNoContent {
			b.Fatalf("storing the hot key on %s: %v %v", host, resp, err)
		}
	}
	tests := []struct{ name, host string }{
		{"a fixed response (the floor)", "floor"},
		{"a KV GET of a hot key", "my.kv"},
		{"a state GET of a hot key", "state.do"},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			routertest.KeptAliveClients(b, addr, "GET /hot HTTP/1.1\r\nHost: "+tt.host+"\r\n\r\n")
		})
	}
}
