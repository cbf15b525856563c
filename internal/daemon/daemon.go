// Package daemon wires interceptd together: store, sandboxes and their rules,
// the DNS shim, the router with its handlers, metrics and the admin API.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interceptd/interceptd/dnsshim"
	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/internal/buildinfo"
	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/internal/connlimit"
	"github.com/interceptd/interceptd/internal/kinds"
	"github.com/interceptd/interceptd/internal/ratelimit"
	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/netns"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/forward"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/router/httpserve"
	"github.com/interceptd/interceptd/router/tlsfront"
	"github.com/interceptd/interceptd/router/worker"
	"github.com/interceptd/interceptd/router/worker/jsrt"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/s3store"
	"github.com/miekg/dns"
)

// ResolvConfDir is where per-namespace resolv.conf files go for `ip netns exec`.
const ResolvConfDir = "/etc/netns"

// NetnsParams returns the manager configuration a config implies; cleanup
// uses it too, so both agree on what the daemon owns.
func NetnsParams(cfg *config.Config) (netns.Config, error) {
	pool, err := netip.ParsePrefix(cfg.Sandbox.Pool)
	if err != nil {
		return netns.Config{}, fmt.Errorf("sandbox.pool: %w", err)
	}
	httpAP, err := netip.ParseAddrPort(cfg.Listen.HTTP)
	if err != nil {
		return netns.Config{}, fmt.Errorf("listen.http: %w", err)
	}
	httpsPort := 0
	if cfg.Listen.HTTPS != "" {
		ap, err := netip.ParseAddrPort(cfg.Listen.HTTPS)
		if err != nil {
			return netns.Config{}, fmt.Errorf("listen.https: %w", err)
		}
		httpsPort = int(ap.Port())
	}
	dests, err := Destinations(cfg)
	if err != nil {
		return netns.Config{}, err
	}
	var protected []string
	for _, p := range dests.Prefixes() {
		protected = append(protected, p.String())
	}
	owner, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return netns.Config{}, fmt.Errorf("data_dir: %w", err)
	}
	nc := netns.Config{
		Pool: pool, NetnsPrefix: cfg.Sandbox.NetnsPrefix, InterfacePrefix: cfg.Sandbox.InterfacePrefix,
		// The namespaces' owner is the daemon of this data dir: one store,
		// one daemon (bbolt's lock).
		Owner: owner, OwnerDir: netns.DefaultOwnerDir,
		Rules: netns.RuleParams{
			InterfacePrefix: cfg.Sandbox.InterfacePrefix,
			HTTPListenIP:    httpAP.Addr().String(), HTTPListenPort: int(httpAP.Port()),
			HTTPSListenPort: httpsPort,
			DNSPort:         cfg.Listen.DNSPort,
			DNSQPS:          cfg.DNS.MaxQPSPerSandbox,
			Pool:            pool.String(),
			// The same destinations the router and the DNS shim protect.
			Protected: protected,
		},
	}
	// The host's LAN or VPC: closed to routed traffic as protected
	// destinations are (iptables is IPv4 here).
	for _, p := range policy.PrivatePrefixes {
		if p.Addr().Is4() {
			nc.Rules.Private = append(nc.Rules.Private, p.String())
		}
	}
	if cfg.Sandbox.WriteResolvConf() {
		nc.ResolvConfDir = ResolvConfDir
	}
	return nc, nil
}

// Destinations are the protected destinations a config implies: the kernel
// rules (NetnsParams) and the router and DNS shim (New) take them from here.
func Destinations(cfg *config.Config) (policy.Destinations, error) {
	pool, err := netip.ParsePrefix(cfg.Sandbox.Pool)
	if err != nil {
		return policy.Destinations{}, fmt.Errorf("sandbox.pool: %w", err)
	}
	virtual, err := netip.ParsePrefix(cfg.DNS.VirtualCIDR)
	if err != nil {
		return policy.Destinations{}, fmt.Errorf("dns.virtual_cidr: %w", err)
	}
	return policy.NewDestinations(pool, virtual), nil
}

// VirtualAddrs assigns each handler host its virtual address, in config
// order, from the first usable address of the virtual prefix.
func VirtualAddrs(cfg *config.Config) map[string]netip.Addr {
	vp := netip.MustParsePrefix(cfg.DNS.VirtualCIDR).Masked()
	out := map[string]netip.Addr{}
	a := vp.Addr()
	for _, h := range cfg.Handlers {
		if policy.NormalizeHost(h.Host) == "*" {
			continue // the catch-all has no name to resolve
		}
		a = a.Next()
		out[policy.NormalizeHost(h.Host)] = a
	}
	return out
}

// Quotas are the store quotas a config gives every sandbox.
func Quotas(cfg *config.Config) store.Amounts {
	q := cfg.Quota
	return store.Amounts{
		KV:    store.Amount{Bytes: int64(q.KV.Bytes), Keys: q.KV.Keys},
		State: store.Amount{Bytes: int64(q.State.Bytes), Keys: q.State.Keys},
		Blob:  store.Amount{Bytes: int64(q.Blob.Bytes), Keys: q.Blob.Keys},
	}
}

// Daemon is a running interceptd.
type Daemon struct {
	// cfg is the config in force; a reload replaces it (cfgMu).
	cfgMu  sync.RWMutex
	cfg    *config.Config
	log    *slog.Logger
	db     *store.DB
	stores backend.Stores   // db as handlers and bindings see it (store/backend)
	etcd   *etcdstore.Store // KV and state, with store.backend etcd; nil otherwise
	s3     *s3store.Store   // blobs, with store.blobs.backend s3; nil otherwise
	// operator is the stores as the admin API sees them: db, with KV and
	// state in etcd and the S3 blob store's purge and check where they are.
	operator backend.Operator
	mgr      *netns.Manager
	dns      *dnsshim.Server
	shim     *dnsshim.Reloadable
	router   *router.Router
	server   *httpserve.Server
	tls      *tlsfront.Server
	workers  *workerSet
	metrics  *metrics.Server
	admin    *admin.Server
	builder  *builder
	counts   counts
	// labels are the sandbox label values of every package's metrics.
	labels *metrics.SandboxLabels
	// book maps the addresses DNS answered with to their names, for the
	// router and for policies that deny names (onPolicy).
	book      *policy.AddrBook
	decisions *policy.Metrics
	started   time.Time
	errc      chan error
	// nameDeniers: sandbox name → its policy, for the sandboxes whose
	// policy has hostname entries in denied_hosts.
	nameDeniers sync.Map

	// What a config reload rebuilds or changes (reload.go).
	reloadMu  sync.Mutex // one reload at a time
	fm        *forward.Metrics
	dnsm      *dnsshim.Metrics
	dnsLimit  *ratelimit.PerKey // the shim's buckets, kept across reloads
	verdicts  policy.Verdicts   // the shim's copy (no resolver)
	upstreams []string
	virtual   map[string]netip.Addr // handler host → virtual address
	retired   map[netip.Addr]bool   // addresses of handlers a reload removed
	infos     []admin.HandlerInfo   // what the admin API says of the handlers
	connCap   atomic.Int64          // listen.max_connections_per_sandbox
	dnsTCPCap atomic.Int64          // dns.max_tcp_connections_per_sandbox
}

// Start brings the daemon up; it returns once every listener and rule is in
// place, which is when sandboxes can be created.
//
// The pieces are built in dependency order: the store (the manager keeps
// its sandbox records there, the handlers their data); the sandbox manager
// (the DNS shim and the router identify callers through it); the DNS shim
// (the router and the handlers resolve names through it); the router with
// its handlers; then the metrics and admin listeners, which only read or
// drive what exists. The manager's hooks (onPolicy, onDelete) reach the
// shim and the router, which do not exist yet when the manager adopts the
// sandboxes that survived a restart: see onPolicy.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (d *Daemon, err error) {
	d = &Daemon{cfg: cfg, log: log, errc: make(chan error, 4), book: &policy.AddrBook{}}
	defer func() {
		if err != nil {
			d.close(context.Background())
		}
	}()
	reg := metrics.NewRegistry(buildinfo.Version())
	d.started = time.Now()
	warnPrivateMounts(log)
	// One set of sandbox label values for every package's metrics, so that
	// a deleted sandbox's series go from all of them at once (onDelete).
	d.labels = metrics.NewSandboxLabels(cfg.Metrics.MaxSandboxLabels)
	d.labels.Grace = cfg.Metrics.DeletedSeriesGrace
	d.decisions = policy.NewMetrics(reg, d.labels)

	// The store, first: the manager records sandboxes in it.
	sm := store.NewMetrics(reg)
	sm.LabelSandboxes(d.labels)
	d.db, err = store.Open(cfg.DataDir, &store.Options{
		Metrics: sm, Quotas: Quotas(cfg), MinFreeBytes: int64(cfg.Store.MinFreeBytes),
	})
	if err != nil {
		return d, err
	}
	d.stores, d.operator = backend.Bolt(d.db), d.db
	if cfg.Store.Backend == config.BackendEtcd {
		if d.etcd, err = OpenEtcd(cfg.Store.Etcd, d.db.QuotaDefaults, etcdstore.NewMetrics(reg), log); err != nil {
			return d, err
		}
		// KV and state from etcd; blobs and Durable Objects stay here.
		bolt := backend.Bolt(d.db)
		d.stores, d.operator = backend.Compose(d.etcd, bolt, bolt), d.etcd.WithLocal(d.db)
		// The usage series of KV and state from etcd's counters; one
		// read of them serves every scrape for usageRefresh.
		sm.UsageFrom("etcd", etcdKinds, d.etcd.UsageCache(usageRefresh).Get)
		log.Info("KV and state are in etcd", "endpoints", strings.Join(cfg.Store.Etcd.Endpoints, ","), "prefix", cfg.Store.Etcd.Prefix)
	}
	if cfg.Store.Blobs.Backend == config.BlobsS3 {
		// Blob buckets in the shared object store; KV, state and Durable
		// Objects stay in bbolt. The store is not reached here: one that
		// is down at start is a 503 on use, not a daemon that will not
		// start (`interceptd store --check` probes it).
		s3, err := OpenS3Blobs(cfg.Store.Blobs.S3, s3store.NewMetrics(reg))
		if err != nil {
			return d, err
		}
		// Blobs are charged to their owners in the engine that keeps
		// the rest of the accounting: etcd, fleet-wide, with the
		// fleet-wide overrides, or bbolt.
		var quotas backend.Operator = d.operator
		if d.etcd != nil {
			quotas = d.etcd
		}
		s3.Account(d.stores, quotas)
		d.s3 = s3
		// The usage series of blobs from the ledger (the bbolt file
		// holds none of theirs); one read of it serves every scrape for
		// usageRefresh.
		sm.UsageFrom("s3", s3Kinds, s3.UsageCache(usageRefresh).Get)
		d.stores = backend.Compose(d.stores, s3, d.stores)
		d.operator = s3store.Operator(d.operator, s3)
		log.Info("blobs in S3", "store", s3.Where(), "prefix", cfg.Store.Blobs.S3.Prefix)
	}

	// The sandbox manager: Setup installs the rules and adopts the sandboxes
	// of a previous run, calling onPolicy for each before the shim and the
	// router exist (they have nothing of these sandboxes yet).
	nc, err := NetnsParams(cfg)
	if err != nil {
		return d, err
	}
	nc.Records, nc.Metrics, nc.Logger = d.db, netns.NewMetrics(reg), log
	nc.Flows = netns.NewFlowMetrics(reg, d.labels)
	nc.DefaultPolicy = cfg.Policy
	// Sandboxes may name the config's workers; the router has no programs
	// for them yet (router/worker), so a sandbox with one is served as
	// without until it does.
	nc.DefaultWorker = cfg.DefaultWorker
	nc.Workers = func(name string) bool { _, ok := cfg.Worker(name); return ok }
	nc.OnPolicy, nc.OnDelete = d.onPolicy, d.onDelete
	if d.mgr, err = netns.New(nc); err != nil {
		return d, err
	}
	if err = d.mgr.Setup(); err != nil {
		return d, fmt.Errorf("setting up interception: %w", err)
	}

	// Refused non-HTTP flows: one log record and one decision each.
	// Allowed ones: one log record each, up to the rules' rate (their
	// counts and bytes are interceptd_sandbox_routed_*, exact).
	if err := netns.WatchFlows(ctx, func(r netns.Refusal) {
		caller, ok := d.mgr.Caller(r.Src)
		d.decisions.Observe(r.Proto, caller.Sandbox, policy.Decision{Result: policy.Deny, Reason: r.Reason})
		if to, into := d.mgr.Caller(r.Dst.Addr()); !ok && into {
			// From outside the sandboxes into one, which its inbound
			// policy refused: named after the sandbox it was for, with
			// its source, so that an operator opening a server sees what
			// knocked.
			log.Info("refused inbound flow", "sandbox", to.Sandbox, "proto", r.Proto, "src", r.Src.String(), "dest", r.Dst.String(), "decision", "deny", "reason", r.Reason)
			return
		}
		log.Info("refused flow", "sandbox", caller.Sandbox, "proto", r.Proto, "dest", r.Dst.String(), "decision", "deny", "reason", r.Reason)
	}, func(r netns.Refusal) {
		caller, _ := d.mgr.Caller(r.Src)
		log.Info("routed flow", "sandbox", caller.Sandbox, "proto", r.Proto, "dest", r.Dst.String(), "decision", "allow")
	}); err != nil {
		log.Warn("routed flows will not be logged", "error", err)
	}

	// The DNS shim: it names callers through the manager, opens learned
	// addresses in the manager's sets and refuses protected ones as the
	// router's fallback does (one Destinations for both).
	upstreams := d.upstreamsOf(cfg)
	virtual := VirtualAddrs(cfg)
	d.virtual, d.retired = virtual, map[netip.Addr]bool{}
	rm := router.NewMetrics(reg, d.labels)
	fm := forward.NewMetrics(reg)
	dnsMetrics := dnsshim.NewMetrics(reg, d.labels)
	d.fm, d.dnsm, d.dnsLimit = fm, dnsMetrics, ratelimit.New(cfg.DNS.MaxQPSPerSandbox)
	dests, err := Destinations(cfg)
	if err != nil {
		return d, err
	}
	fwd := &handlers.Forward{Destinations: dests, Metrics: fm, Logger: log}
	// Every decision's order lives in policy.Verdicts; what it needs
	// beyond a sandbox's policy is the daemon's. The shim's copy has no
	// resolver: its decisions never resolve, and the router's Host check
	// resolves through the shim, set below once the shim exists.
	verdicts := policy.Verdicts{Protected: fwd.Protected, Book: d.book, Sandbox: func(a netip.Addr) (*policy.Compiled, bool) {
		c, ok := d.mgr.Caller(a)
		return c.Policy, ok
	}}
	d.verdicts = verdicts

	// The workers, before the shim and the router, which ask them which
	// names and requests they serve. Their fetch() resolves through the
	// shim (made next) and is held to the destinations closed to forwards.
	vcidr := netip.MustParsePrefix(cfg.DNS.VirtualCIDR).Masked()
	fetcher := func(roots *tls.Config) *worker.Fetcher {
		return &worker.Fetcher{
			TLS: roots,
			Closed: func(a netip.Addr) string {
				_, why := policy.Closed(fwd.Protected, a)
				return why
			},
			Resolve: func(name string) ([]netip.Addr, time.Duration, error) { return d.shim.LookupA(name) },
			Virtual: vcidr.Contains,
			Origin: func(env router.Env, host string) string {
				caller, known := d.mgr.Caller(env.Source.Addr())
				if !known {
					return "the source address is not a sandbox"
				}
				dec := verdicts.HTTP(caller, policy.HTTPRequest{Host: policy.NormalizeHost(host), Dest: env.Dest})
				if dec.Result != policy.Forward {
					return dec.Reason + ": " + dec.Detail
				}
				return ""
			},
			Forward: fwd,
		}
	}
	jsrt.SetHeapLimit(uint64(cfg.WorkerHeapLimit))
	if d.workers, err = buildWorkers(cfg, d.stores, fetcher, worker.NewMetrics(reg), log, virtual); err != nil {
		return d, err
	}

	d.shim = dnsshim.NewReloadable(dnsshim.New(d.shimConfig(cfg, virtual, upstreams)))
	d.dnsTCPCap.Store(int64(cfg.DNS.MaxTCPConnectionsPerSandbox))
	lc := dnsshim.ListenConfig{MaxTCPConns: func() int { return int(d.dnsTCPCap.Load()) }, Metrics: dnsMetrics}
	if d.dns, err = lc.Listen(net.JoinHostPort("0.0.0.0", strconv.Itoa(cfg.Listen.DNSPort)), d.shim); err != nil {
		return d, err
	}

	// The router and its handlers, which resolve through the shim.
	routes, infos, b, err := d.buildRoutes(cfg, virtual)
	if err != nil {
		return d, err
	}
	d.builder, d.infos = b, infos
	verdicts.Resolve = d.shim.LookupA
	verdicts.Charge = d.shim.Charge
	d.router = router.New(router.Config{
		Hosts: routes.Hosts, Virtual: routes.Virtual, Programs: d.workers.program, Identify: d.mgr.Caller, CatchAll: routes.CatchAll,
		Fallback: fwd, Verdicts: verdicts,
		DenyStatus: cfg.Deny.Status, DenyBody: cfg.Deny.Body, Decisions: d.decisions,
		MaxRequestsPerSecond: cfg.Listen.MaxRequestsPerSecondPerSandbox,
		UpgradeIdleTimeout:   upgradeIdle(cfg.Listen.UpgradeIdleTimeout),
		Metrics:              rm, Logger: log,
	})
	// The transport in front of the router. Each sandbox holds at most its
	// own max_conns connections on each listener, else the default.
	d.connCap.Store(int64(cfg.Listen.MaxConnectionsPerSandbox))
	connCap := func(a netip.Addr) int {
		def := int(d.connCap.Load())
		if caller, ok := d.mgr.Caller(a); ok {
			return policy.Or(caller.Limits.Conns, def)
		}
		return def
	}
	hm := httpserve.NewMetrics(reg)
	d.server = httpserve.New(d.router, hm, log)
	ln, err := httpserve.ListenTransparent(ctx, cfg.Listen.HTTP)
	if err != nil {
		return d, err
	}
	ln = httpserve.LimitPerSourceFunc(ln, connCap, hm)
	go func() { d.errc <- d.server.Serve(ln) }()
	var caCert []byte // for GET /v1/ca; nil without interception
	if cfg.Listen.HTTPS != "" {
		// The port-443 front: SNI policy, then a splice or a reset.
		tm := tlsfront.NewMetrics(reg)
		ca, err := LoadCA(cfg)
		if err != nil {
			return d, err
		}
		// A sandbox's HTTP/2 requests in flight are capped as its connections
		// are: one connection carries many.
		d.tls = &tlsfront.Server{Decide: d.router, CA: ca, Handler: d.router, Metrics: tm, Logger: log, MaxStreams: connCap}
		caCert = ca.CertPEM()
		tln, err := httpserve.ListenTransparent(ctx, cfg.Listen.HTTPS)
		if err != nil {
			return d, err
		}
		tln = connlimit.PerSourceFunc(tln, connCap, tm.Limited)
		go func() { d.errc <- d.tls.Serve(tln) }()
	}

	// What `interceptd status` reports, from the components just built.
	d.counts = counts{
		sandboxes: d.mgr.Count, lost: d.mgr.Lost, requests: rm.Requests,
		dnsQueries: dnsMetrics.Queries, denials: d.decisions.Denials,
	}
	if cfg.Listen.Metrics != "" {
		if d.metrics, err = metrics.Listen(cfg.Listen.Metrics, reg, cfg.Listen.Pprof); err != nil {
			return d, err
		}
		go func() { d.errc <- d.metrics.Serve() }()
	}

	// The admin API last: through it sandboxes are created and deleted, so
	// from here on the manager's hooks find the shim and the router.
	if d.admin, err = admin.Listen(cfg.AdminSocket, admin.Backend{
		DefaultPolicy: cfg.Policy, Sandboxes: d.mgr, Handlers: infos, Store: d.operator,
		DefaultLimits: d.defaultLimits, Reload: d.ReloadConfig, SocketGroup: cfg.AdminSocketGroup,
		Status: d.Status, Workers: d.workers, CACert: caCert, Engines: d.engines(),
		Namespace: func(ns string) router.Handler {
			return &handlers.KV{Store: d.stores, Kind: store.KindKV, Namespace: ns, Limits: store.Limits{}.WithDefaults()}
		},
	}, reg, log); err != nil {
		return d, err
	}
	go func() { d.errc <- d.admin.Serve() }()
	if d.metrics != nil {
		// Liveness asks only what a restart would fix; readiness also
		// asks the store, which may be remote and away for a while (the
		// daemon keeps intercepting meanwhile: a restart would not help).
		d.metrics.SetProbes(d.adminAnswers, d.Healthy)
	}

	log.Info("interceptd ready",
		"admin_socket", cfg.AdminSocket, "http", cfg.Listen.HTTP, "dns_port", cfg.Listen.DNSPort,
		"metrics", cfg.Listen.Metrics, "dns_upstreams", upstreams, "handlers", len(routes.Hosts),
		"sandboxes", len(d.mgr.List()))
	return d, nil
}

// onPolicy runs when a sandbox's policy takes effect (adopted, created or
// changed). A sandbox whose policy denies a name is refused the addresses
// DNS gave (anyone) for it, on every protocol: those already learned now,
// and those learned later (denyLearned). Its open tunnels, and other
// sandboxes' tunnels to it (which its inbound entries admitted), are
// decided again under the new policy.
//
// The manager calls it synchronously from Setup (adoption), Create and
// SetPolicy. Setup runs before the router exists, when no sandbox has a
// tunnel to decide again; Create and SetPolicy come through the admin API,
// which Start opens after the router is built. So the nil check is for
// adoption only, and the fields are never written while a hook reads them.
func (d *Daemon) onPolicy(sb netns.Sandbox) {
	if sb.Compiled == nil || !sb.Compiled.DeniesNames() {
		d.nameDeniers.Delete(sb.Name)
	} else {
		d.nameDeniers.Store(sb.Name, sb.Compiled)
		d.book.Indexed(func(a netip.Addr, name string, left time.Duration) {
			if _, denied := sb.Compiled.Denies(name, 0); denied {
				d.mgr.DenyLearned(sb.Name, []netip.Addr{a}, left)
			}
		})
	}
	if d.router != nil {
		d.router.Redecide(sb.Name)
		// Its inbound entries hold other sandboxes' tunnels to it.
		if sb.Addr.IsValid() {
			d.router.RedecideInto(sb.Addr)
		}
	}
}

// onDelete runs when a sandbox is deleted: everything kept about it by
// name goes (learned addresses, its metric series, the shim's and the
// router's per-sandbox state), so that a sandbox created later under the
// same name starts clean. Like onPolicy it runs synchronously in the
// manager; Setup deletes no sandbox the shim or router knows, because they
// do not exist yet.
func (d *Daemon) onDelete(name string) {
	d.book.Forget(name)
	d.nameDeniers.Delete(name)
	d.labels.Release(name)
	if d.shim != nil {
		d.shim.Forget(name)
	}
	if d.router != nil {
		d.router.Forget(name)
	}
}

// denyLearned refuses the addresses of a DNS answer to every sandbox whose
// policy denies one of the names they answer for. Only sandboxes with
// hostname denies (nameDeniers) are looked at.
func (d *Daemon) denyLearned(names []string, addrs []netip.Addr, ttl time.Duration) {
	d.nameDeniers.Range(func(k, v any) bool {
		pol := v.(*policy.Compiled)
		for _, n := range names {
			if _, denied := pol.Denies(n, 0); denied {
				d.mgr.DenyLearned(k.(string), addrs, ttl)
				break
			}
		}
		return true
	})
}

// Wait blocks until ctx ends or a listener fails, then shuts down.
func (d *Daemon) Wait(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
	case err = <-d.errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(err, d.close(sctx))
}

// close stops listeners and releases the store. Sandboxes and rules stay: a
// stopped daemon leaves its sandboxes without egress rather than unpoliced,
// and the next start re-adopts them.
func (d *Daemon) close(ctx context.Context) error {
	var errs []error
	if d.admin != nil {
		errs = append(errs, d.admin.Shutdown(ctx))
		d.admin = nil
	}
	if d.server != nil {
		errs = append(errs, d.server.Shutdown(ctx))
	}
	if d.tls != nil {
		errs = append(errs, d.tls.Close())
	}
	if d.dns != nil {
		errs = append(errs, d.dns.Shutdown(ctx))
	}
	if d.shim != nil {
		d.shim.Close() // exchanges still under way close their sockets as they end
	}
	if d.metrics != nil {
		errs = append(errs, d.metrics.Shutdown(ctx))
	}
	if d.mgr != nil {
		d.mgr.Close()
	}
	if d.etcd != nil {
		errs = append(errs, d.etcd.Close())
	}
	if d.db != nil {
		errs = append(errs, d.db.Close())
	}
	d.log.Info("interceptd stopped")
	return errors.Join(errs...)
}

// hostResolvers reads the host's /etc/resolv.conf for upstream resolvers.
func hostResolvers(log *slog.Logger) []string {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		log.Warn("no dns upstreams configured and /etc/resolv.conf unreadable: forwarded names will get SERVFAIL", "error", err)
		return nil
	}
	out := make([]string, 0, len(cc.Servers))
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	return out
}

// Cleanup removes every namespace, link, rule and route a daemon with cfg
// made, without needing the daemon (or its store) to be there, and says
// which namespaces it removed and which it left: those whose owner marker
// names another daemon (another data dir), or none.
func Cleanup(cfg *config.Config) (removed, left []string, err error) {
	nc, err := NetnsParams(cfg)
	if err != nil {
		return nil, nil, err
	}
	m, err := netns.New(nc)
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	return m.Cleanup()
}

// warnPrivateMounts warns when the daemon runs in a mount namespace other
// than init's (`ip netns exec`, or a systemd unit with private mounts): the
// sandbox namespaces it bind-mounts under /run/netns are then invisible to
// runtimes and to `ip netns` outside, unless /run/netns propagates back.
func warnPrivateMounts(log *slog.Logger) {
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	init, err2 := os.Readlink("/proc/1/ns/mnt")
	if err1 == nil && err2 == nil && self != init {
		log.Warn("interceptd runs in a private mount namespace: sandbox namespaces under /run/netns may be invisible to other processes; start it with nsenter --net=... rather than ip netns exec, and let /run/netns propagate (shared) in a systemd unit")
	}
}

// builder makes router handlers from configured ones, and keeps the file
// secrets they read so that a reload can refresh them.
type builder struct {
	stores  backend.Stores
	cfg     *config.Config
	resolve func(string) ([]netip.Addr, time.Duration, error)
	metrics *forward.Metrics
	log     *slog.Logger
	files   []*handlers.FileSecret
}

// build makes the router handler a configured handler describes, through
// its kind in the registry.
func (b *builder) build(h config.Handler) (router.Handler, error) {
	spec := h.Config()
	if spec == nil {
		return nil, fmt.Errorf("handler %s: unknown kind %q", h.Host, h.Kind)
	}
	return spec.Build(kinds.Deps{
		Host: policy.NormalizeHost(h.Host), Stores: b.stores, Resolve: b.resolve, Metrics: b.metrics, Logger: b.log,
		DenyStatus: b.cfg.Deny.Status, DenyBody: b.cfg.Deny.Body,
		Reloadable: func(fs *handlers.FileSecret) { b.files = append(b.files, fs) },
	})
}

// Reload re-reads the secrets handlers inject (SIGHUP). A secret that fails
// to load keeps its previous value, and the error says which.
func (d *Daemon) Reload() error {
	var errs []error
	for _, f := range d.builder.files {
		if err := f.Load(); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		d.log.Error("reload: some secrets kept their previous value", "error", err)
	} else {
		d.log.Info("reloaded secrets", "files", len(d.builder.files))
	}
	// Then the workers: their secrets, and their scripts, each swapped in
	// without dropping a request in flight (a script that fails keeps the
	// old one).
	if d.workers != nil {
		if werr := d.workers.reload(""); werr != nil {
			d.log.Error("reload: some workers kept their previous version", "error", werr)
			err = errors.Join(err, werr)
		}
	}
	return err
}

// ReloadWorker reloads one worker's script (`interceptd worker reload`).
func (d *Daemon) ReloadWorker(name string) error {
	if d.workers == nil {
		return fmt.Errorf("%w: %q", errUnknownWorker, name)
	}
	return d.workers.reload(name)
}

// Healthy checks that the daemon can still do its work: the store answers
// and the admin socket accepts connections.
func (d *Daemon) Healthy() error {
	if _, err := d.db.Stats(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return d.adminAnswers()
}

// adminAnswers checks that the admin socket accepts connections: the
// daemon's own loop runs (the liveness probe).
func (d *Daemon) adminAnswers() error {
	c, err := net.DialTimeout("unix", d.config().AdminSocket, time.Second)
	if err != nil {
		return fmt.Errorf("admin socket: %w", err)
	}
	return c.Close()
}

// counts are the numbers `interceptd status` reports, each read from the
// component that keeps it (the same objects /metrics exports), so that the
// status and the metrics cannot disagree.
type counts struct {
	sandboxes  func() int   // the manager's sandboxes (interceptd_sandbox_active)
	lost       func() int   // those whose namespace disappeared (nil: none known)
	requests   func() int64 // interceptd_router_requests_total
	dnsQueries func() int64 // interceptd_dns_queries_total
	denials    func() int64 // deny decisions in interceptd_policy_decisions_total
}

// Status summarises the running daemon for `interceptd status`, from the
// numbers its components keep.
func (d *Daemon) Status() admin.Status {
	st := admin.Status{Version: buildinfo.Version(), Started: d.started.UTC(), UptimeSeconds: int64(time.Since(d.started).Seconds())}
	if all, err := d.db.AllUsage(); err == nil {
		for _, a := range all {
			st.StoreUsage.Add(a)
		}
	}
	st.StoreEngines = d.engines()
	// S3 blobs from the ledger, read now, beside etcd's counters: with
	// the ledger in etcd and etcd down, each read waits out its request
	// timeout, and the answer should take one timeout, not two.
	var (
		ledger    map[string]store.Amounts
		ledgerErr error
		wg        sync.WaitGroup
	)
	if d.s3 != nil {
		wg.Add(1)
		go func() { defer wg.Done(); ledger, ledgerErr = d.s3.AllUsage() }()
	}
	if d.etcd != nil {
		// KV and state from etcd's counters, read now (an operator's
		// question, not a scrape's): the bbolt file holds none of
		// theirs. Bounded by store.etcd.request_timeout.
		st.StoreUsage.KV, st.StoreUsage.State = store.Amount{}, store.Amount{}
		all, err := d.etcd.AllUsage()
		if err != nil {
			st.StoreUnavailable = &admin.Outage{Engine: "etcd", Kinds: etcdKinds, Reason: err.Error()}
		}
		for _, a := range all {
			st.StoreUsage.Add(store.Amounts{KV: a.KV, State: a.State})
		}
	}
	wg.Wait()
	if d.s3 != nil {
		// The ledger's settled figures, as in the usage series; the
		// bbolt file holds none of S3's blobs.
		st.StoreUsage.Blob = store.Amount{}
		st.StoreEngines[store.KindBlob] = "s3"
		st.StoreBlobLedger = d.ledgerEngine()
		if ledgerErr != nil {
			if st.StoreUnavailable == nil {
				st.StoreUnavailable = &admin.Outage{Engine: st.StoreBlobLedger, Reason: ledgerErr.Error()}
			}
			// With the ledger in etcd, an outage of etcd's is one
			// outage of both.
			st.StoreUnavailable.Kinds = append(slices.Clone(st.StoreUnavailable.Kinds), s3Kinds...)
		}
		for _, a := range ledger {
			st.StoreUsage.Add(store.Amounts{Blob: a.Blob})
		}
	}
	st.StoreFreeBytes, _ = d.db.FreeBytes()
	st.StoreMinFreeBytes = int64(d.config().Store.MinFreeBytes)
	st.StoreBytes, _ = d.db.FileSize()
	st.Sandboxes = int64(d.counts.sandboxes())
	if d.counts.lost != nil {
		st.SandboxesLost = int64(d.counts.lost())
	}
	st.Requests = d.counts.requests()
	st.DNSQueries = d.counts.dnsQueries()
	st.Denials = d.counts.denials()
	return st
}

// LoadCA loads the CA the config names (tls.ca_cert, tls.ca_key), or the
// daemon's own in <data_dir>/ca, making it there on first use.
func LoadCA(cfg *config.Config) (*tlsfront.CA, error) {
	if cfg.TLS.CACert != "" {
		ca, err := tlsfront.LoadCA(cfg.TLS.CACert, cfg.TLS.CAKey)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		return ca, nil
	}
	ca, err := tlsfront.LoadOrCreateCA(cfg.CADir())
	if err != nil {
		return nil, fmt.Errorf("interceptd's CA: %w", err)
	}
	return ca, nil
}

// upgradeIdle maps the config's upgrade_idle_timeout (0: none) to the
// router's (0: its default; negative: none).
func upgradeIdle(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
