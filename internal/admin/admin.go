// Package admin is the daemon's local control API: JSON over HTTP on a unix
// socket that only root can open. The CLI is its client.
//
//	POST   /v1/sandboxes         {"name": "web1", "policy": {…}}  → 201 sandbox
//	                             (+ "netns_path", "interface": attach a runtime's namespace;
//	                             + "quota": {"blob.bytes": 10485760, …}: override quotas;
//	                             + "worker": "app" ("" for none; absent: default_worker);
//	                             + "chain": {"host_interface", "address", "gateway"}: take over
//	                               a primary CNI plugin's wiring instead of building a veth)
//	GET    /v1/sandboxes/{name}/policy             → 200 policy
//	GET    /v1/sandboxes/{name}/check              → 200 when its wiring is intact
//	PATCH  /v1/sandboxes/{name}/policy  {fields}   → 200 policy (given fields replace)
//	GET    /v1/sandboxes                           → 200 [sandbox]
//	GET    /v1/sandboxes/{name}                    → 200 sandbox, its store usage and quota
//	                                                 (kinds of an engine that is down: "unavailable")
//	PATCH  /v1/sandboxes/{name}/quota   {overrides} → 200 quota (replaces the overrides)
//	PUT    /v1/sandboxes/{name}/worker  {"worker": "app"} → 200 sandbox ("" for none)
//	DELETE /v1/sandboxes/{name}[?purge=1]          → 204 (purge: and its data)
//	GET    /v1/handlers                            → 200 [handler]
//	ANY    /v1/handlers/{host}/{key...}[?sandbox=] → the handler's own answer,
//	                                                 acting as that sandbox
//	GET    /v1/store[?check=1]                     → 200 store stats (after bbolt's consistency check)
//	GET    /v1/status                              → 200 version, uptime, counts
//
// Errors are {"error": "..."} with a 4xx for the caller's mistakes.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/interceptd/interceptd/netns"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/prometheus/client_golang/prometheus"
)

// Sandboxes is what the API manages.
type Sandboxes interface {
	CreateSpec(name string, s netns.Spec) (netns.Sandbox, error)
	AttachSpec(name, nsPath, ifName string, s netns.Spec) (netns.Sandbox, error)
	Check(name string) error
	SetPolicy(name string, p policy.Policy) (netns.Sandbox, error)
	// SetWorker gives a sandbox a worker ("" for none); an unknown one is
	// netns.ErrUnknownWorker.
	SetWorker(name, worker string) (netns.Sandbox, error)
	// SetLimits replaces a sandbox's own limits; a negative one is
	// netns.ErrInvalidLimits.
	SetLimits(name string, l policy.Limits) (netns.Sandbox, error)
	Delete(name string) error
	Get(name string) (netns.Sandbox, bool)
	List() []netns.Sandbox
}

// HandlerInfo describes a configured handler to operators.
type HandlerInfo struct {
	Host       string         `json:"host"`
	Kind       string         `json:"kind"`
	Space      string         `json:"space"`
	PerSandbox bool           `json:"per_sandbox"`
	Handler    router.Handler `json:"-"`
}

// Store is the part of the stores operators reach: the storage contract's
// Operator (quotas, usage, purges, checks).
type Store = backend.Operator

// SandboxInfo is a sandbox as GET /v1/sandboxes/{name} shows it: its
// record, what the writes charged to it occupy in the stores, and its
// quotas (0: no limit).
type SandboxInfo struct {
	netns.Sandbox
	Usage store.Amounts `json:"usage"`
	Quota store.Amounts `json:"quota"`
	// EffectiveLimits are the limits in force: the sandbox's own, the
	// daemon's default where it has none (0: no limit).
	EffectiveLimits policy.Limits `json:"effective_limits"`
	// Unavailable, when set, names the kinds whose usage and quotas could
	// not be read (their engine is unreachable) and why: those kinds read
	// zero in Usage and Quota, which is not their usage. The rest of the
	// answer is the daemon's own and holds.
	Unavailable *Outage `json:"unavailable,omitempty"`
}

// Outage says which kinds' figures an engine that could not be read left
// out of an answer, and why.
type Outage struct {
	Engine string   `json:"engine"`
	Kinds  []string `json:"kinds"`
	Reason string   `json:"reason"`
}

// Backend is what the API serves.
type Backend struct {
	// DefaultPolicy is what a patch at creation applies to (Server.Update
	// replaces it on a reload).
	DefaultPolicy policy.Policy
	// DefaultLimits are the daemon's limits for a sandbox without its own
	// (every field set); nil: none.
	DefaultLimits func() policy.Limits
	// SocketGroup, when set, is the group whose members may use the socket
	// (mode 0660, owned by that group); empty: its owner only (0600).
	SocketGroup string
	// Reload re-reads the config file and applies what can change live;
	// nil: POST /v1/reload is not served.
	Reload    func() (ReloadResult, error)
	Sandboxes Sandboxes
	Handlers  []HandlerInfo
	Store     Store
	// Namespace returns a handler for a KV namespace's shared scope.
	Namespace func(ns string) router.Handler
	// Status summarises the daemon.
	Status func() Status
	// Engines names the engine that keeps each kind's usage and quotas
	// ("bbolt", "etcd"); a kind not in it is bbolt's. A sandbox shown while
	// an engine other than bbolt cannot be read has its kinds marked
	// unavailable (SandboxInfo.Unavailable) instead of failing.
	Engines map[string]string
	// Workers are the daemon's JavaScript workers; nil when it has none.
	Workers Workers
	// CACert is the PEM certificate of the CA that signs intercepted names'
	// certificates (GET /v1/ca), for `interceptd run` to make its command
	// trust; nil when the daemon intercepts no HTTPS. Public data: the key
	// never comes here.
	CACert []byte
}

// ReloadResult is POST /v1/reload's answer: what the reload changed.
type ReloadResult struct {
	// Config is the file read; empty when the daemon runs the embedded
	// default, which only reloads secrets and workers' scripts.
	Config string `json:"config"`
	// Changed names the parts that changed ("handlers", "policy",
	// "dns.upstreams", ...); empty when nothing did.
	Changed []string `json:"changed"`
	// PolicyFollowers is how many sandboxes that follow the default policy
	// took the new one.
	PolicyFollowers int `json:"policy_followers,omitempty"`
	// Error says what kept its previous version although the rest was
	// applied (a secret file or a worker's script that failed to load).
	Error string `json:"error,omitempty"`
}

// ErrReloadRefused wraps the reason a reload was refused (a config that
// fails validation, or a change that needs a restart): the running config
// stays.
var ErrReloadRefused = errors.New("reload refused")

// CA is the answer of GET /v1/ca.
type CA struct {
	Certificate string `json:"certificate"` // PEM
}

// Workers are the daemon's JavaScript workers, for `interceptd worker`.
type Workers interface {
	List() []WorkerInfo
	// Reload reads and compiles a worker's script again and swaps it in;
	// its error names the file, line and column of a script that fails
	// (the old version then stays), or wraps ErrUnknownWorker.
	Reload(name string) error
}

// ErrNoCA is GET /v1/ca's answer from a daemon that intercepts no HTTPS
// (listen.https empty).
var ErrNoCA = errors.New("no CA: the daemon intercepts no HTTPS (listen.https is empty)")

// ErrUnknownWorker is Workers.Reload's error for a name no worker has.
var ErrUnknownWorker = errors.New("unknown worker")

// WorkerInfo describes one worker (GET /v1/workers).
type WorkerInfo struct {
	Name     string   `json:"name"`
	Script   string   `json:"script"`
	Outbound bool     `json:"outbound"`
	Hosts    []string `json:"hosts"`
}

// Status is the answer of GET /v1/status.
type Status struct {
	Version       string    `json:"version"`
	Started       time.Time `json:"started"`
	UptimeSeconds int64     `json:"uptime_seconds"`
	Sandboxes     int64     `json:"sandboxes"`
	// SandboxesLost are those whose namespace disappeared under the daemon.
	SandboxesLost int64 `json:"sandboxes_lost,omitempty"`
	Requests      int64 `json:"requests"`
	Denials       int64 `json:"denials"`
	DNSQueries    int64 `json:"dns_queries"`
	StoreBytes    int64 `json:"store_bytes"`
	// StoreUsage is what the writes charged to sandboxes occupy, summed
	// over them (operator writes are charged to no one), each kind from
	// the engine StoreEngines names.
	StoreUsage store.Amounts `json:"store_usage"`
	// StoreEngines names the engine each kind's usage comes from: "bbolt"
	// (this host's file), "etcd" (the fleet's counters: every host of
	// the fleet reports the same figures) or, for blobs, "s3" (the
	// settled figures of the S3 blobs' ledger, kept in StoreBlobLedger).
	StoreEngines map[string]string `json:"store_engines,omitempty"`
	// StoreBlobLedger, with S3 blobs, names the engine that keeps their
	// ledger: "etcd" (the fleet's writes) or "bbolt" (this host's).
	StoreBlobLedger string `json:"store_blob_ledger,omitempty"`
	// StoreUnavailable, when set, names the kinds whose usage could not be
	// read within the engine's request timeout, and why: they read zero
	// in StoreUsage, which is not their usage.
	StoreUnavailable *Outage `json:"store_unavailable,omitempty"`
	// StoreFreeBytes is the free space under the data directory;
	// StoreMinFreeBytes the floor under which writes are refused.
	StoreFreeBytes    int64 `json:"store_free_bytes"`
	StoreMinFreeBytes int64 `json:"store_min_free_bytes"`
}

// Server serves the admin API on a unix socket.
type Server struct {
	srv *http.Server
	ln  net.Listener
	h   *handlers
}

// Update replaces the default policy and the handlers the API reports and
// reaches (a config reload).
func (s *Server) Update(def policy.Policy, infos []HandlerInfo) {
	s.h.mu.Lock()
	s.h.be.DefaultPolicy, s.h.be.Handlers = def, infos
	s.h.mu.Unlock()
}

// Listen creates the socket at path (replacing a stale one) with mode 0600.
func Listen(path string, be Backend, reg prometheus.Registerer, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket dir: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin socket %s is in use: is another interceptd running?", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restricting admin socket: %w", err)
	}
	if be.SocketGroup != "" {
		// Restricted first, then opened to the group: never a moment
		// when anyone else could connect.
		if err := shareWithGroup(path, be.SocketGroup); err != nil {
			ln.Close()
			return nil, err
		}
	}
	mux := http.NewServeMux()
	h := &handlers{sb: be.Sandboxes, be: be}
	mux.HandleFunc("POST /v1/sandboxes", h.create)
	mux.HandleFunc("GET /v1/sandboxes", h.list)
	mux.HandleFunc("GET /v1/sandboxes/{name}", h.get)
	mux.HandleFunc("DELETE /v1/sandboxes/{name}", h.delete)
	mux.HandleFunc("GET /v1/sandboxes/{name}/policy", h.getPolicy)
	mux.HandleFunc("GET /v1/sandboxes/{name}/check", func(w http.ResponseWriter, r *http.Request) {
		if err := h.sb.Check(r.PathValue("name")); err != nil {
			writeErr(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("PATCH /v1/sandboxes/{name}/policy", h.patchPolicy)
	mux.HandleFunc("PATCH /v1/sandboxes/{name}/quota", h.patchQuota)
	mux.HandleFunc("PUT /v1/sandboxes/{name}/limits", h.putLimits)
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if be.Reload == nil {
			writeErr(w, http.StatusNotFound, errors.New("this daemon does not reload"))
			return
		}
		res, err := be.Reload()
		if errors.Is(err, ErrReloadRefused) {
			writeErr(w, http.StatusUnprocessableEntity, err)
			return
		}
		if err != nil {
			// Applied, but a part kept its previous version: said in
			// the answer, beside what did change.
			res.Error = err.Error()
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("PUT /v1/sandboxes/{name}/worker", h.putWorker)
	mux.HandleFunc("GET /v1/workers", func(w http.ResponseWriter, r *http.Request) {
		out := []WorkerInfo{}
		if be.Workers != nil {
			out = append(out, be.Workers.List()...)
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/workers/{name}/reload", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		err := ErrUnknownWorker
		if be.Workers != nil {
			err = be.Workers.Reload(name)
		}
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, map[string]string{"reloaded": name})
		case errors.Is(err, ErrUnknownWorker):
			writeErr(w, http.StatusNotFound, fmt.Errorf("no worker %q", name))
		default:
			// The script's error (file, line, column) is the operator's to
			// read: the old version is still in force.
			writeErr(w, http.StatusUnprocessableEntity, err)
		}
	})
	mux.HandleFunc("GET /v1/handlers", h.handlers)
	mux.HandleFunc("/v1/handlers/{host}/{key...}", h.handler)
	mux.HandleFunc("GET /v1/store", h.stats)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, be.Status()) })
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, r *http.Request) {
		if len(be.CACert) == 0 {
			writeErr(w, http.StatusNotFound, ErrNoCA)
			return
		}
		writeJSON(w, http.StatusOK, CA{Certificate: string(be.CACert)})
	})
	mux.HandleFunc("/v1/kv/{ns}/{key...}", h.namespace)
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "interceptd", Subsystem: "admin", Name: "requests_total",
		Help: "Admin API requests by route pattern and status code.",
	}, []string{"route", "code"})
	reg.MustRegister(reqs)
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		mux.ServeHTTP(sw, r)
		route := r.Pattern // the matched pattern: a closed set
		if route == "" {
			route = "_unmatched"
		}
		reqs.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
	})
	return &Server{ln: ln, h: h, srv: &http.Server{
		Handler: counted, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}, nil
}

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving admin api: %w", err)
	}
	return nil
}

// Shutdown stops the server; the socket file is removed.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

type handlers struct {
	sb Sandboxes
	mu sync.RWMutex // guards be's DefaultPolicy and Handlers (Server.Update)
	be Backend
}

func (h *handlers) defaultPolicy() policy.Policy {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.be.DefaultPolicy
}

func (h *handlers) handlerInfos() []HandlerInfo {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.be.Handlers
}

// CreateRequest is the body of POST /v1/sandboxes. A nil Policy takes the
// config's default; a PolicyPatch on top of the default is also accepted.
type CreateRequest struct {
	Name   string       `json:"name"`
	Policy *PolicyPatch `json:"policy,omitempty"`
	// NetnsPath, when set, attaches this existing namespace (a runtime's)
	// instead of creating one; Interface names the sandbox end of the veth.
	NetnsPath string `json:"netns_path,omitempty"`
	Interface string `json:"interface,omitempty"`
	// Quota overrides the configured quotas for this sandbox: "kv.bytes",
	// "kv.keys", "state.…", "blob.…" (store.QuotaFields) to a number, 0
	// for no limit. A sandbox created without it gets the configured ones,
	// whatever an earlier sandbox of the same name had.
	Quota map[string]int64 `json:"quota,omitempty"`
	// Worker names the sandbox's worker (config workers[].name); "" for
	// none; nil (absent) for the config's default_worker. A name the
	// config does not have is a 400 naming it.
	Worker *string `json:"worker,omitempty"`
	// Limits are the sandbox's own limits (max_rps, max_conns,
	// max_dns_qps); a field left out takes the daemon's default, 0 is no
	// limit.
	Limits policy.Limits `json:"limits,omitempty"`
	// Chain, with NetnsPath, attaches to the wiring a primary CNI plugin
	// made for the container (its prevResult) instead of building a veth:
	// the CNI plugin chained after ptp.
	Chain *ChainRequest `json:"chain,omitempty"`
}

// ChainRequest is the primary plugin's wiring, from its result: the host
// end of the container's veth, the container's address (with its prefix
// length) and its gateway. The daemon checks it against the kernel
// before it changes anything (netns.Primary).
type ChainRequest struct {
	HostInterface string       `json:"host_interface"`
	Address       netip.Prefix `json:"address"`
	Gateway       netip.Addr   `json:"gateway"`
}

// WorkerRequest is the body of PUT /v1/sandboxes/{name}/worker.
type WorkerRequest struct {
	// Worker is the worker's name, "" for none.
	Worker string `json:"worker"`
}

// PolicyPatch changes a policy: the fields given replace the current ones.
type PolicyPatch struct {
	Internet     *bool     `json:"internet,omitempty"`
	AllowedHosts *[]string `json:"allowed_hosts,omitempty"`
	DeniedHosts  *[]string `json:"denied_hosts,omitempty"`
	// Inbound replaces the list of who may open connections to the
	// sandbox (policy.Inbound entries); an empty list closes it again.
	Inbound *[]string `json:"inbound,omitempty"`
}

// Apply returns p with the patch's fields replaced.
func (pp *PolicyPatch) Apply(p policy.Policy) policy.Policy {
	if pp == nil {
		return p
	}
	if pp.Internet != nil {
		p.Internet = *pp.Internet
	}
	if pp.AllowedHosts != nil {
		p.AllowedHosts = *pp.AllowedHosts
	}
	if pp.DeniedHosts != nil {
		p.DeniedHosts = *pp.DeniedHosts
	}
	if pp.Inbound != nil {
		p.Inbound = *pp.Inbound
	}
	return p
}

func (h *handlers) create(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("decoding request: %w", err))
		return
	}
	var pol *policy.Policy
	if req.Policy != nil {
		p := req.Policy.Apply(h.defaultPolicy())
		pol = &p
	}
	if _, err := (store.Amounts{}).WithOverrides(req.Quota); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	var sb netns.Sandbox
	var err error
	spec := netns.Spec{Policy: pol, Worker: req.Worker, Limits: req.Limits}
	if c := req.Chain; c != nil {
		if req.NetnsPath == "" {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("%w: chain needs netns_path", netns.ErrInvalidChain))
			return
		}
		spec.Chain = &netns.Primary{HostInterface: c.HostInterface, Addr: c.Address, Gateway: c.Gateway}
	}
	if req.NetnsPath != "" {
		sb, err = h.sb.AttachSpec(req.Name, req.NetnsPath, req.Interface, spec)
	} else {
		sb, err = h.sb.CreateSpec(req.Name, spec)
	}
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	if err := h.be.Store.SetQuota(sb.Name, req.Quota); err != nil {
		writeErr(w, http.StatusInternalServerError, fmt.Errorf("sandbox %s created, but setting its quota failed: %w", sb.Name, err))
		return
	}
	writeJSON(w, http.StatusCreated, sb)
}

func (h *handlers) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.sb.List())
}

func (h *handlers) get(w http.ResponseWriter, r *http.Request) {
	sb, ok := h.sb.Get(r.PathValue("name"))
	if !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("%w: %s", netns.ErrNotFound, r.PathValue("name")))
		return
	}
	info := SandboxInfo{Sandbox: sb, EffectiveLimits: sb.Limits}
	if h.be.DefaultLimits != nil {
		info.EffectiveLimits = h.be.DefaultLimits().Merge(sb.Limits)
	}
	// Side by side: with a remote engine down each waits out its request
	// timeout, and the answer should take one timeout, not two.
	var err1, err2 error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); info.Quota, err2 = h.be.Store.Quota(sb.Name) }()
	info.Usage, err1 = h.be.Store.Usage(sb.Name)
	wg.Wait()
	err := errors.Join(err1, err2)
	if remote := h.remoteKinds(); err != nil && errors.Is(err, store.ErrUnavailable) && remote != nil {
		// The sandbox is the daemon's own: an engine away shows as
		// such, and the rest of the answer holds.
		remote.Reason = err.Error()
		info.Unavailable, err = remote, nil
	}
	if err != nil {
		writeErr(w, http.StatusInternalServerError, fmt.Errorf("reading store usage: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// remoteKinds are the kinds an engine other than bbolt keeps; nil when
// bbolt keeps every kind.
func (h *handlers) remoteKinds() *Outage {
	var o *Outage
	for _, k := range []string{store.KindKV, store.KindState, store.KindBlob, store.KindDO} {
		if e, ok := h.be.Engines[k]; ok && e != "bbolt" {
			if o == nil {
				o = &Outage{Engine: e}
			}
			o.Kinds = append(o.Kinds, k)
		}
	}
	return o
}

// patchQuota replaces a sandbox's quota overrides; {} goes back to the
// configured quotas. A quota lowered under the usage refuses what would
// add to it; nothing stored is removed.
func (h *handlers) patchQuota(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var o map[string]int64
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("decoding quota: %w", err))
		return
	}
	if _, ok := h.sb.Get(name); !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("%w: %s", netns.ErrNotFound, name))
		return
	}
	if err := h.be.Store.SetQuota(name, o); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	q, err := h.be.Store.Quota(name)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, q)
}

// putLimits replaces a sandbox's own limits; {} gives it the daemon's
// defaults again.
func (h *handlers) putLimits(w http.ResponseWriter, r *http.Request) {
	var l policy.Limits
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("decoding limits: %w", err))
		return
	}
	sb, err := h.sb.SetLimits(r.PathValue("name"), l)
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, sb.Limits)
}

func (h *handlers) delete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	purge := r.URL.Query().Get("purge") == "1"
	err := h.sb.Delete(name)
	if purge && (err == nil || errors.Is(err, netns.ErrNotFound)) {
		// Purging the data of a sandbox that is already gone is the point
		// of purge: state outlives its sandbox until then.
		if !netns.ValidName(name) {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("%w %q", netns.ErrInvalidName, name))
			return
		}
		perr := h.be.Store.Purge(name)
		switch {
		case errors.Is(perr, store.ErrNothingToPurge) && err != nil:
			// No sandbox and nothing stored under the name: the same answer
			// as a delete without --purge.
			err = fmt.Errorf("%w: %s (and nothing is stored under that name)", netns.ErrNotFound, name)
		case errors.Is(perr, store.ErrNothingToPurge):
			err = nil // the sandbox is deleted; it had stored nothing
		default:
			err = perr
		}
	}
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	// Its quota overrides go with it (a sandbox re-created under the name
	// gets its own); what it stored stays charged to it until purged.
	h.be.Store.SetQuota(name, nil)
	w.WriteHeader(http.StatusNoContent)
}

func (h *handlers) handlers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.handlerInfos())
}

func (h *handlers) stats(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("check") == "1" {
		if err := h.be.Store.Check(); err != nil {
			writeErr(w, http.StatusInternalServerError, fmt.Errorf("store consistency check: %w", err))
			return
		}
	}
	st, err := h.be.Store.Stats()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// handler lets an operator use a handler as a sandbox would (or, for a
// shared one, as any sandbox), to seed and inspect data from the host.
func (h *handlers) handler(w http.ResponseWriter, r *http.Request) {
	host := policy.NormalizeHost(r.PathValue("host"))
	var hi *HandlerInfo
	infos := h.handlerInfos()
	for i := range infos {
		if infos[i].Host == host {
			hi = &infos[i]
		}
	}
	if hi == nil {
		writeErr(w, http.StatusNotFound, fmt.Errorf("no handler for host %q", host))
		return
	}
	sandbox := r.URL.Query().Get("sandbox")
	if sandbox != "" && !netns.ValidName(sandbox) {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("%w %q", netns.ErrInvalidName, sandbox))
		return
	}
	if hi.PerSandbox && sandbox == "" {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("%s keeps data per sandbox: pass ?sandbox=NAME", host))
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = "/"+r.PathValue("key"), ""
	// Operator: what the operator stores is charged to no sandbox.
	env := router.Env{Sandbox: sandbox, Host: host, Handler: host, Operator: true}
	if err := hi.Handler.ServeHTTP(w, r2, env); err != nil {
		router.WriteError(w, err)
	}
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, netns.ErrExists):
		return http.StatusConflict
	case errors.Is(err, netns.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, netns.ErrInvalidName), errors.Is(err, netns.ErrInvalidPolicy), errors.Is(err, netns.ErrUnknownWorker), errors.Is(err, netns.ErrInvalidLimits),
		errors.Is(err, netns.ErrInvalidChain):
		return http.StatusBadRequest
	case errors.Is(err, netns.ErrPoolExhausted):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func (h *handlers) getPolicy(w http.ResponseWriter, r *http.Request) {
	sb, ok := h.sb.Get(r.PathValue("name"))
	if !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("%w: %s", netns.ErrNotFound, r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, sb.Policy)
}

func (h *handlers) patchPolicy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var pp PolicyPatch
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pp); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("decoding policy: %w", err))
		return
	}
	sb, ok := h.sb.Get(name)
	if !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("%w: %s", netns.ErrNotFound, name))
		return
	}
	sb, err := h.sb.SetPolicy(name, pp.Apply(sb.Policy))
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, sb.Policy)
}

// putWorker gives a sandbox the worker the body names, or none.
func (h *handlers) putWorker(w http.ResponseWriter, r *http.Request) {
	var req WorkerRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("decoding worker: %w", err))
		return
	}
	sb, err := h.sb.SetWorker(r.PathValue("name"), req.Worker)
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

// namespace serves a KV namespace directly, whether or not a handler
// exposes it to sandboxes (per-sandbox secrets live in such namespaces).
func (h *handlers) namespace(w http.ResponseWriter, r *http.Request) {
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = "/"+r.PathValue("key"), ""
	if err := h.be.Namespace(r.PathValue("ns")).ServeHTTP(w, r2, router.Env{Operator: true}); err != nil {
		router.WriteError(w, err)
	}
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// shareWithGroup gives the socket at path to group (a name or a number)
// with mode 0660.
func shareWithGroup(path, group string) error {
	g, err := user.LookupGroup(group)
	if err != nil {
		if g, err = user.LookupGroupId(group); err != nil {
			return fmt.Errorf("admin_socket_group %q: no such group", group)
		}
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("admin_socket_group %q: gid %q: %w", group, g.Gid, err)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("giving the admin socket to group %s: %w", group, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return fmt.Errorf("opening the admin socket to group %s: %w", group, err)
	}
	return nil
}
