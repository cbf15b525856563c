package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/interceptd/interceptd/dnsshim"
	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/worker/jsrt"
	"github.com/miekg/dns"
)

// config is the config in force.
func (d *Daemon) config() *config.Config {
	d.cfgMu.RLock()
	defer d.cfgMu.RUnlock()
	return d.cfg
}

// upstreamsOf are the resolvers cfg forwards to: its own, or the host's.
func (d *Daemon) upstreamsOf(cfg *config.Config) []string {
	if len(cfg.DNS.Upstreams) > 0 {
		return cfg.DNS.Upstreams
	}
	return hostResolvers(d.log)
}

// shimConfig is the DNS shim cfg describes, answering virtual for the
// handlers' names.
func (d *Daemon) shimConfig(cfg *config.Config, virtual map[string]netip.Addr, upstreams []string) dnsshim.Config {
	rcode := dns.RcodeNameError
	if cfg.DNS.DeniedRcode == "REFUSED" {
		rcode = dns.RcodeRefused
	}
	return dnsshim.Config{
		Names: virtual, Upstreams: upstreams, Timeout: cfg.DNS.Timeout, TTL: cfg.DNS.TTL,
		Identify: d.mgr.Caller, DeniedRcode: rcode, MaxQPSPerSandbox: cfg.DNS.MaxQPSPerSandbox, Limiter: d.dnsLimit,
		Book: d.book, Decisions: d.decisions,
		AllowAddrs: d.mgr.AllowLearned, Learned: d.denyLearned, Verdicts: d.verdicts, WorkerName: d.workers.dnsName,
		Metrics: d.dnsm, Logger: d.log,
	}
}

// buildRoutes makes the router's routes for cfg's handlers, with the
// virtual addresses given, and what the admin API says of them. The
// builder keeps the handlers' file secrets for the next secrets reload.
func (d *Daemon) buildRoutes(cfg *config.Config, virtual map[string]netip.Addr) (router.Routes, []admin.HandlerInfo, *builder, error) {
	b := &builder{stores: d.stores, cfg: cfg, resolve: d.shim.LookupA, metrics: d.fm, log: d.log}
	rs := router.Routes{Hosts: map[string]router.Route{}, Virtual: map[netip.Addr]string{}, DenyStatus: cfg.Deny.Status, DenyBody: cfg.Deny.Body}
	infos := make([]admin.HandlerInfo, 0, len(cfg.Handlers))
	for _, h := range cfg.Handlers {
		host := policy.NormalizeHost(h.Host)
		hd, err := b.build(h)
		if err != nil {
			return rs, nil, nil, err
		}
		infos = append(infos, admin.HandlerInfo{Host: host, Kind: h.Kind, Space: h.Space(), PerSandbox: h.PerSandbox(), Handler: hd})
		if host == "*" {
			rs.CatchAll = &router.Route{Name: "_catch_all", Handler: hd}
			continue
		}
		rs.Hosts[host] = router.Route{Name: host, Handler: hd, HTTPS: h.HTTPS}
		rs.Virtual[virtual[host]] = host
	}
	d.workers.virtual(rs.Virtual)
	return rs, infos, b, nil
}

// defaultLimits are the limits of a sandbox without its own.
func (d *Daemon) defaultLimits() policy.Limits {
	cfg := d.config()
	rps, conns, qps := cfg.Listen.MaxRequestsPerSecondPerSandbox, cfg.Listen.MaxConnectionsPerSandbox, cfg.DNS.MaxQPSPerSandbox
	return policy.Limits{RPS: &rps, Conns: &conns, DNSQPS: &qps}
}

// stableVirtual gives next's handler names their virtual addresses without
// moving any name that keeps its handler: a sandbox may hold a cached DNS
// answer for it, and the address must still lead to the same handler. A
// new name takes the first address no handler or worker holds, and none
// that a removed handler had (until a restart), so that a cached answer
// for a removed name never reaches a handler added in its place.
func (d *Daemon) stableVirtual(next *config.Config) (map[string]netip.Addr, error) {
	used := map[netip.Addr]bool{}
	for _, a := range d.virtual {
		used[a] = true
	}
	for a := range d.retired {
		used[a] = true
	}
	workerAddrs := map[netip.Addr]string{}
	d.workers.virtual(workerAddrs)
	for a := range workerAddrs {
		used[a] = true
	}
	prefix := netip.MustParsePrefix(next.DNS.VirtualCIDR).Masked()
	out := map[string]netip.Addr{}
	a := prefix.Addr()
	for _, h := range next.Handlers {
		host := policy.NormalizeHost(h.Host)
		if host == "*" {
			continue
		}
		if old, ok := d.virtual[host]; ok {
			out[host] = old
			continue
		}
		if wa, ok := d.workers.addrOf(host); ok {
			out[host] = wa // a worker key's name: they share it, as at start
			continue
		}
		for a = a.Next(); used[a]; a = a.Next() {
		}
		// The prefix's last address is its broadcast address.
		if !prefix.Contains(a) || !prefix.Contains(a.Next()) {
			return nil, fmt.Errorf("dns.virtual_cidr %s has no address left for handler %s (a removed handler's address is not given again until a restart)", prefix, host)
		}
		used[a] = true
		out[host] = a
	}
	return out, nil
}

// ReloadConfig re-reads the config file and applies what a running daemon
// can take (config.Changes): handlers, the default policy (to new sandboxes
// and to those that follow it), the deny response, DNS upstreams, timeout,
// TTL and answer code, the default limits and quotas. A config that fails
// validation, or one that changes a field that needs a restart, is refused
// whole (admin.ErrReloadRefused, naming the field) and the running config
// stays. Then, as on every reload, the secrets and workers' scripts are
// read again (Reload). A request in flight finishes with the handler it
// started with.
func (d *Daemon) ReloadConfig() (admin.ReloadResult, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	cur := d.config()
	res := admin.ReloadResult{Config: cur.Path(), Changed: []string{}}
	if cur.Path() != "" {
		next, err := cur.Reread()
		if err != nil {
			d.log.Error("reload refused: the running config is kept", "error", err)
			return res, fmt.Errorf("%w: %v (the running config is kept)", admin.ErrReloadRefused, err)
		}
		live, restart := config.Changes(cur, next)
		if len(restart) > 0 {
			err := fmt.Errorf("%w: %s changes only with a restart; the running config is kept (restart the daemon to apply it, or undo the change)",
				admin.ErrReloadRefused, strings.Join(restart, ", "))
			d.log.Error("reload refused", "error", err, "restart_fields", restart)
			return res, err
		}
		var partial error
		if res.PolicyFollowers, partial, err = d.apply(next, live); err != nil {
			d.log.Error("reload refused: the running config is kept", "error", err)
			return res, fmt.Errorf("%w: %v (the running config is kept)", admin.ErrReloadRefused, err)
		}
		res.Changed = live
		d.log.Info("config reloaded", "config", cur.Path(), "changed", live, "policy_followers", res.PolicyFollowers)
		if partial != nil {
			// In force, but the kernel or a sandbox's sets did not follow.
			d.log.Error("reload: applied, with errors", "error", partial)
			return res, errors.Join(partial, d.Reload())
		}
	}
	return res, d.Reload()
}

// apply makes the live changes of next, in an order that never opens more
// than either config does: everything that can fail (handlers built,
// addresses given) first, then the swaps.
func (d *Daemon) apply(next *config.Config, live []string) (followers int, partial, err error) {
	changed := func(prefixes ...string) bool {
		return slices.ContainsFunc(live, func(f string) bool {
			return slices.ContainsFunc(prefixes, func(p string) bool { return f == p || strings.HasPrefix(f, p+".") })
		})
	}
	virtual := d.virtual
	var routes router.Routes
	var infos []admin.HandlerInfo
	var b *builder
	if changed("handlers", "deny") {
		if virtual, err = d.stableVirtual(next); err != nil {
			return 0, nil, err
		}
		if routes, infos, b, err = d.buildRoutes(next, virtual); err != nil {
			return 0, nil, err
		}
	}
	// Nothing below fails but the kernel's DNS rate and the default
	// policy's sets, which are reported and leave the rest applied.
	d.cfgMu.Lock()
	d.cfg = next
	d.cfgMu.Unlock()
	var errs []error
	if b != nil {
		for n, a := range d.virtual {
			if virtual[n] != a {
				d.retired[a] = true
			}
		}
		d.virtual, d.builder, d.infos = virtual, b, infos
		d.router.SetRoutes(routes, next.Listen.MaxRequestsPerSecondPerSandbox)
		d.admin.Update(next.Policy, infos)
	} else {
		d.router.SetRoutes(d.router.Routes(), next.Listen.MaxRequestsPerSecondPerSandbox)
	}
	if changed("handlers", "dns") {
		d.upstreams = d.upstreamsOf(next)
		d.shim.Swap(dnsshim.New(d.shimConfig(next, d.virtual, d.upstreams)))
	}
	if changed("dns.max_qps_per_sandbox") {
		if err := d.mgr.SetDNSDefault(next.DNS.MaxQPSPerSandbox); err != nil {
			errs = append(errs, err)
		}
	}
	d.connCap.Store(int64(next.Listen.MaxConnectionsPerSandbox))
	d.dnsTCPCap.Store(int64(next.DNS.MaxTCPConnectionsPerSandbox))
	d.labels.SetGrace(next.Metrics.DeletedSeriesGrace)
	d.db.SetDefaults(Quotas(next), int64(next.Store.MinFreeBytes))
	jsrt.SetHeapLimit(uint64(next.WorkerHeapLimit))
	if changed("policy") {
		if b == nil {
			d.admin.Update(next.Policy, d.infos)
		}
		var perr error
		if followers, perr = d.mgr.SetDefaultPolicy(next.Policy); perr != nil {
			errs = append(errs, perr)
		}
	}
	if changed("handlers") {
		// What an open tunnel was granted under the old handlers is
		// decided again under the new ones.
		for _, sb := range d.mgr.List() {
			d.router.Redecide(sb.Name)
		}
	}
	return followers, errors.Join(errs...), nil
}
