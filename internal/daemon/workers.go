package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/router/worker"
	"github.com/interceptd/interceptd/store/backend"
)

// workerSet is the config's workers, loaded, with the virtual addresses of
// the names their outboundByHost keys serve.
type workerSet struct {
	byName map[string]*worker.Worker
	order  []string
	files  []*handlers.FileSecret // secrets bound to workers, for SIGHUP

	mu    sync.Mutex
	addrs map[string]netip.Addr // a key's host part ("my.kv", "*.example.com") → its virtual address
	virt  map[netip.Addr]string // and back
	next  netip.Addr            // the next free virtual address
	end   netip.Prefix

	// handlerAddrs are the built-in handlers' addresses: a worker key for
	// the same host shares its address, and the router then serves the
	// worker's function to the worker's sandboxes and the handler to the
	// others (docs/workers.md).
	handlerAddrs map[string]netip.Addr
}

// buildWorkers loads every configured worker. A script that does not load
// fails the start, naming the worker, the file, line and column.
func buildWorkers(cfg *config.Config, stores backend.Stores, fetcher func(*tls.Config) *worker.Fetcher, m *worker.Metrics, log *slog.Logger, handlerAddrs map[string]netip.Addr) (*workerSet, error) {
	ws := &workerSet{byName: map[string]*worker.Worker{}, addrs: map[string]netip.Addr{}, virt: map[netip.Addr]string{},
		end: netip.MustParsePrefix(cfg.DNS.VirtualCIDR).Masked()}
	// Workers' names take the addresses after the handlers'.
	ws.next = ws.end.Addr()
	ws.handlerAddrs = handlerAddrs
	for _, a := range handlerAddrs {
		if ws.next.Less(a) {
			ws.next = a
		}
	}
	for _, wc := range cfg.Workers {
		bindings := map[string]worker.Binding{}
		for name, b := range wc.Bindings {
			switch b.Kind() {
			case "kv":
				bindings[name] = &worker.KV{Store: stores, Namespace: b.KV}
			case "blob":
				bindings[name] = &worker.R2{Store: stores, Bucket: b.Blob}
			case "durable_object":
				bindings[name] = &worker.DurableObject{Store: stores, Class: b.DurableObject}
			case "var":
				bindings[name] = worker.Var(*b.Var)
			case "secret":
				fs, err := secretFile(b.Secret)
				if err == nil {
					err = fs.Load()
				}
				if err != nil {
					return nil, fmt.Errorf("worker %s: binding %s: %w", wc.Name, name, err)
				}
				ws.files = append(ws.files, fs)
				bindings[name] = worker.Secret{Secret: fs}
			default:
				return nil, fmt.Errorf("worker %s: binding %s: no kind", wc.Name, name)
			}
		}
		var roots *tls.Config
		if wc.CAFile != "" {
			pem, err := os.ReadFile(wc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("worker %s: ca_file: %w", wc.Name, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("worker %s: ca_file %s: no PEM certificate in it", wc.Name, wc.CAFile)
			}
			roots = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		w, err := worker.New(worker.Config{
			Name: wc.Name, Script: wc.Path, Bindings: bindings, Fetch: fetcher(roots), Metrics: m, Logger: log, HTTPS: wc.HTTPS,
			Limits: worker.Limits{CPU: wc.Limits.CPU(), Wall: wc.Limits.Wall(), Subrequests: wc.Limits.MaxSubrequests()},
		})
		if err != nil {
			return nil, err
		}
		ws.byName[wc.Name] = w
		ws.order = append(ws.order, wc.Name)
		if err := ws.assign(w); err != nil {
			return nil, err
		}
	}
	return ws, nil
}

// secretFile is a secret binding's source: a systemd credential's name, or
// an absolute path.
func secretFile(s string) (*handlers.FileSecret, error) {
	if len(s) > 0 && s[0] == '/' {
		return &handlers.FileSecret{Path: s}, nil
	}
	return handlers.CredentialSecret(s)
}

// assign gives each name w's keys serve a virtual address, once: the same
// name in two workers shares one.
func (ws *workerSet) assign(w *worker.Worker) error {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	names := w.Names()
	slices.Sort(names)
	for _, n := range names {
		if _, ok := ws.addrs[n]; ok {
			continue
		}
		if a, ok := ws.handlerAddrs[n]; ok {
			ws.addrs[n] = a // the router maps it to n already
			continue
		}
		a := ws.next.Next()
		// The prefix's last address is its broadcast address, as for the
		// handlers (config: "too small").
		if !ws.end.Contains(a) || !ws.end.Contains(a.Next()) {
			return fmt.Errorf("worker %s: dns.virtual_cidr %s has no address left for %s", w.Name(), ws.end, n)
		}
		ws.next = a
		ws.addrs[n], ws.virt[a] = a, n
	}
	return nil
}

// program is router.Config.Programs.
func (ws *workerSet) program(name string) router.Program {
	if w, ok := ws.byName[name]; ok {
		return w
	}
	return nil
}

// dnsName is dnsshim.Config.WorkerName.
func (ws *workerSet) dnsName(workerName, name string) (netip.Addr, bool) {
	w, ok := ws.byName[workerName]
	if !ok {
		return netip.Addr{}, false
	}
	key, ok := w.MatchName(name)
	if !ok {
		return netip.Addr{}, false
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	a, ok := ws.addrs[key]
	return a, ok
}

// addrOf is the virtual address a worker key's name has, if any.
func (ws *workerSet) addrOf(name string) (netip.Addr, bool) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	a, ok := ws.addrs[name]
	return a, ok
}

// virtual adds the workers' virtual addresses to the handlers'.
func (ws *workerSet) virtual(into map[netip.Addr]string) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for a, n := range ws.virt {
		into[a] = n
	}
}

// reload re-reads the workers' secrets, then reloads one worker (name) or
// all (""). A worker whose script fails keeps its old version; the error
// names it.
func (ws *workerSet) reload(name string) error {
	if name != "" {
		w, ok := ws.byName[name]
		if !ok {
			return fmt.Errorf("%w: %q", errUnknownWorker, name)
		}
		return ws.reloadOne(w)
	}
	var errs []error
	for _, f := range ws.files {
		if err := f.Load(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range ws.order {
		if err := ws.reloadOne(ws.byName[n]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (ws *workerSet) reloadOne(w *worker.Worker) error {
	if err := w.Reload(); err != nil {
		return err
	}
	return ws.assign(w)
}

var errUnknownWorker = admin.ErrUnknownWorker

// List implements admin.Workers.
func (ws *workerSet) List() []admin.WorkerInfo {
	out := make([]admin.WorkerInfo, 0, len(ws.order))
	for _, n := range ws.order {
		w := ws.byName[n]
		out = append(out, admin.WorkerInfo{Name: n, Script: w.Script(), Outbound: w.HasOutbound(), Hosts: w.Hosts()})
	}
	return out
}

// Reload implements admin.Workers.
func (ws *workerSet) Reload(name string) error { return ws.reload(name) }
