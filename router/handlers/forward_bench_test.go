package handlers

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/routertest"
)

// BenchmarkForwardThroughTheLeanLoop is a sandbox's forward as the daemon
// serves it: the server's lean loop, the router, the _forward handler and
// the forwarder's pooled client, to an upstream over loopback.
func BenchmarkForwardThroughTheLeanLoop(b *testing.B) {
	upSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	uln, _ := net.Listen("tcp", "127.0.0.1:0")
	go upSrv.Serve(uln)
	defer upSrv.Close()
	dest := uln.Addr().(*net.TCPAddr).AddrPort()
	f := &Forward{Logger: slog.New(slog.DiscardHandler)}
	addr, _ := routertest.ServeRoutes(b, nil, map[string]router.Route{"up": {Name: "up", Handler: router.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request, env router.Env) error {
			env.Dest = dest // the upstream stands for the address the sandbox dialled
			return f.ServeHTTP(w, r, env)
		})}})
	routertest.KeptAliveClients(b, addr, "GET / HTTP/1.1\r\nHost: up\r\n\r\n")
}
