// Package dnsshim answers every DNS query that leaves a sandbox. Handler
// hostnames (and the names the sandbox's worker serves) get an A record
// with a virtual address that the router maps back to the hostname (AAAA is an empty NOERROR, so clients fall back to IPv4 at
// once); other names are forwarded to the upstream resolvers, and an upstream
// that fails or is too slow is a fast SERVFAIL, never a hang. Queries from
// anything that is not a sandbox are refused: the shim is not an open resolver.
//
// The Shim is a dns.Handler in the CoreDNS mould: ServeDNS writes exactly one
// response for every query it is handed.
package dnsshim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interceptd/interceptd/internal/connlimit"
	"github.com/interceptd/interceptd/internal/ratelimit"
	"github.com/interceptd/interceptd/policy"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Identify tells whether a source address is a sandbox, which, and its
// policy.
type Identify func(netip.Addr) (policy.Caller, bool)

// Config configures a Shim.
type Config struct {
	// Names maps handler hostnames (any case, with or without a trailing
	// dot) to the virtual addresses they resolve to.
	Names map[string]netip.Addr
	// WorkerName, when set, answers the names a sandbox's worker serves
	// (the keys of its outboundByHost that name names: exact names, and any
	// name a "*." glob key matches): the virtual address to answer for
	// name (lowercase, without its trailing dot) when the worker has one
	// for it. It is asked only for a caller with a worker
	// (policy.Caller.Worker), and before Names: a worker's function comes
	// before a built-in handler, as in the router. nil: no worker serves a
	// name.
	WorkerName func(worker, name string) (netip.Addr, bool)
	// Upstreams are tried in order for every other name.
	Upstreams []string
	// Timeout bounds the whole forwarding of one query, all upstreams included.
	Timeout time.Duration
	// TTL of handler answers, in seconds.
	TTL uint32
	// Identify gates who is answered and with which policy.
	Identify Identify
	// MaxQPSPerSandbox limits the queries one sandbox gets answered per
	// second (bursts of twice that); beyond it, REFUSED. 0 means no limit.
	MaxQPSPerSandbox int
	// DeniedRcode answers names policy denies (dns.RcodeNameError or
	// dns.RcodeRefused). Default NXDOMAIN.
	DeniedRcode int
	// Limiter, when set, keeps the per-sandbox query buckets, so that a
	// Shim made by a config reload goes on from its predecessor's; its
	// default rate is set to MaxQPSPerSandbox. nil: a limiter of its own.
	Limiter *ratelimit.PerKey
	// Book learns the addresses forwarded answers give each sandbox.
	Book *policy.AddrBook
	// AllowAddrs, when set, is told the addresses answered for a name the
	// sandbox's allowlist names, so non-HTTP traffic to them can pass on
	// the ports the matching entries give (ports nil: every port).
	AllowAddrs func(sandbox string, addrs []netip.Addr, ttl time.Duration, ports []uint16)
	// Learned, when set, is told every forwarded answer's addresses with
	// the names they answer for (the name asked and its CNAME chain), so
	// that sandboxes whose policy denies one of those names are refused the
	// addresses on every protocol.
	Learned func(names []string, addrs []netip.Addr, ttl time.Duration)
	// Verdicts decides every query and screens every forwarded answer
	// (policy.Verdicts.DNSQuery, DNSAnswer): its Protected and the private
	// networks never reach a sandbox in an answer unless an IP/CIDR
	// allowed_hosts entry of its names them. The shim only acts on its
	// decisions.
	Verdicts  policy.Verdicts
	Decisions *policy.Metrics
	Metrics   *Metrics
	Logger    *slog.Logger
}

// Shim is the DNS handler.
type Shim struct {
	limit *ratelimit.PerKey
	names map[string]netip.Addr
	fast  map[string]fastName // the IPv4 handler names, for fastAnswer
	cfg   Config
	udp   []*udpUpstream // one per cfg.Upstreams
	tcp   *dns.Client
}

var _ dns.Handler = (*Shim)(nil)

// New returns a Shim for cfg.
func New(cfg Config) *Shim {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.DeniedRcode == 0 {
		cfg.DeniedRcode = dns.RcodeNameError
	}
	names := make(map[string]netip.Addr, len(cfg.Names))
	fast := make(map[string]fastName, len(cfg.Names))
	for n, a := range cfg.Names {
		// The handler hosts in the form every other part of the daemon
		// compares them in; a question's name is only lowercased to look
		// one up (see policy.NormalizeHost on why not normalised).
		key := dns.Fqdn(policy.NormalizeHost(n))
		names[key] = a
		if a.Is4() {
			fast[key] = fastName{name: key, a: a.As4()}
		}
	}
	s := &Shim{
		limit: cfg.Limiter,
		names: names, fast: fast, cfg: cfg,
		tcp: &dns.Client{Net: "tcp"},
	}
	if s.limit == nil {
		s.limit = ratelimit.New(cfg.MaxQPSPerSandbox)
	} else {
		s.limit.SetRate(cfg.MaxQPSPerSandbox)
	}
	for _, up := range cfg.Upstreams {
		s.udp = append(s.udp, newUDPUpstream(up))
	}
	return s
}

// Close closes the sockets the shim keeps to its upstreams. Forwarding
// after Close still works, on new ones.
func (s *Shim) Close() {
	for _, u := range s.udp {
		u.close()
	}
}

// Answer kinds: the closed set behind the "answer" metric label.
const (
	AnswerHandler   = "handler"   // a handler hostname, answered locally
	AnswerForwarded = "forwarded" // answered by an upstream
	AnswerServfail  = "servfail"  // every upstream failed or timed out
	AnswerRefused   = "refused"   // the source is not a sandbox
	AnswerMalformed = "malformed" // not a single-question query
	AnswerDenied    = "denied"    // policy denies the name
	AnswerLimited   = "limited"   // the sandbox is over its query rate
)

// ServeDNS answers r. It always writes one response.
func (s *Shim) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	start := time.Now()
	kind, sandbox, resp := s.answer(w, r)
	if resp == nil {
		resp = new(dns.Msg)
		resp.SetRcode(r, dns.RcodeServerFailure)
	}
	if err := w.WriteMsg(resp); err != nil {
		s.cfg.Logger.Debug("writing dns response", "error", err)
	}
	s.cfg.Metrics.observe(nil, kind, sandbox, resp.Rcode, start)
}

func (s *Shim) answer(w dns.ResponseWriter, r *dns.Msg) (string, string, *dns.Msg) {
	m := new(dns.Msg)
	caller, ok := s.cfg.Identify(sourceAddr(w.RemoteAddr()))
	if !ok {
		m.SetRcode(r, dns.RcodeRefused)
		return AnswerRefused, "", m
	}
	if !s.limit.AllowAt(caller.Sandbox, policy.Or(caller.Limits.DNSQPS, s.limit.Rate()), time.Now()) {
		m.SetRcode(r, dns.RcodeRefused)
		return AnswerLimited, caller.Sandbox, m
	}
	if r.Opcode != dns.OpcodeQuery || len(r.Question) != 1 || r.Response {
		m.SetRcode(r, dns.RcodeFormatError)
		return AnswerMalformed, caller.Sandbox, m
	}
	q := r.Question[0]
	addr, isHandler := s.workerName(caller, q.Name)
	if !isHandler {
		addr, isHandler = s.names[strings.ToLower(q.Name)]
	}
	var d policy.Decision
	if caller.Policy != nil {
		d = s.cfg.Verdicts.DNSQuery(caller, q.Name, isHandler)
		s.cfg.Decisions.Observe("dns", caller.Sandbox, d)
		if !d.Allowed() {
			// At once, so the client fails fast instead of timing out.
			m.SetRcode(r, s.cfg.DeniedRcode)
			m.RecursionAvailable = true
			s.cfg.Logger.Info("dns denied", "sandbox", caller.Sandbox, "reason", d.Reason, "pattern", d.Pattern)
			return AnswerDenied, caller.Sandbox, m
		}
	}
	if isHandler {
		m.SetReply(r)
		m.Authoritative = true
		m.RecursionAvailable = true
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: s.cfg.TTL},
				A:   net.IP(addr.AsSlice()),
			})
		}
		// AAAA and every other type: NOERROR with no records (NODATA).
		return AnswerHandler, caller.Sandbox, m
	}
	resp, err := s.forward(r, isTCP(w))
	if err != nil {
		s.cfg.Logger.Debug("dns forward failed", "error", err)
		m.SetRcode(r, dns.RcodeServerFailure)
		return AnswerServfail, caller.Sandbox, m
	}
	resp.Id = r.Id
	names := chain(q.Name, resp)
	if caller.Policy != nil {
		if d, detail := s.screen(caller, names, resp); !d.Allowed() {
			s.cfg.Decisions.Observe("dns", caller.Sandbox, d)
			s.cfg.Logger.Info("dns answer refused", "sandbox", caller.Sandbox, "name", strings.TrimSuffix(q.Name, "."), "reason", d.Reason, "detail", detail)
			m.SetRcode(r, s.cfg.DeniedRcode)
			m.RecursionAvailable = true
			return AnswerDenied, caller.Sandbox, m
		}
	}
	addrs, ttl := aRecords(resp)
	if s.cfg.Book != nil {
		for _, n := range names {
			s.cfg.Book.Learn(caller.Sandbox, n, addrs, ttl)
		}
	}
	if s.cfg.Learned != nil && len(addrs) > 0 {
		s.cfg.Learned(names, addrs, ttl)
	}
	if d.Reason == policy.ReasonAllowed && s.cfg.AllowAddrs != nil {
		ports, _ := caller.Policy.AllowedPorts(q.Name)
		s.cfg.AllowAddrs(caller.Sandbox, addrs, ttl, ports)
	}
	return AnswerForwarded, caller.Sandbox, resp
}

// workerName is the virtual address of a name the caller's worker serves.
func (s *Shim) workerName(caller policy.Caller, qname string) (netip.Addr, bool) {
	if caller.Worker == "" || s.cfg.WorkerName == nil {
		return netip.Addr{}, false
	}
	return s.cfg.WorkerName(caller.Worker, strings.TrimSuffix(strings.ToLower(qname), "."))
}

// chain returns the name asked and every name its answer's CNAME records
// lead to: the final addresses answer for each of them.
func chain(qname string, resp *dns.Msg) []string {
	names := []string{strings.ToLower(qname)}
	for _, rr := range resp.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			t := strings.ToLower(c.Target)
			if !slices.Contains(names, t) {
				names = append(names, t)
			}
		}
	}
	return names
}

// screen applies the caller's verdict on a forwarded answer
// (policy.Verdicts.DNSAnswer) to resp: it removes the address records the
// verdict removes, and returns the verdict with its detail.
func (s *Shim) screen(caller policy.Caller, names []string, resp *dns.Msg) (policy.Decision, string) {
	// Room for the usual answer's addresses without allocating.
	var buf [8]netip.Addr
	addrs := buf[:0]
	for _, rr := range resp.Answer {
		if a, ok := recordAddr(rr); ok {
			addrs = append(addrs, a)
		}
	}
	sc := s.cfg.Verdicts.DNSAnswer(caller, policy.DNSAnswer{Names: names, Addrs: addrs})
	if !sc.Decision.Allowed() {
		return sc.Decision, sc.Decision.Detail
	}
	if sc.Removed.Result != "" {
		kept, i := resp.Answer[:0], 0
		for _, rr := range resp.Answer {
			if _, ok := recordAddr(rr); ok {
				i++
				if !sc.Keeps(i - 1) {
					continue
				}
			}
			kept = append(kept, rr)
		}
		resp.Answer = kept
		s.cfg.Logger.Info("dns answer records removed", "sandbox", caller.Sandbox, "reason", sc.Removed.Reason, "detail", sc.Removed.Detail)
	}
	return sc.Decision, ""
}

// recordAddr returns the address of an A or AAAA record; ok is false for
// any other record. An address of the wrong length is the invalid Addr
// (and ok), as the screening has always seen it.
func recordAddr(rr dns.RR) (netip.Addr, bool) {
	switch rr := rr.(type) {
	case *dns.A:
		a, _ := netip.AddrFromSlice(rr.A)
		return a, true
	case *dns.AAAA:
		a, _ := netip.AddrFromSlice(rr.AAAA)
		return a, true
	}
	return netip.Addr{}, false
}

// aRecords returns an answer's IPv4 addresses and their smallest TTL.
func aRecords(resp *dns.Msg) ([]netip.Addr, time.Duration) {
	var addrs []netip.Addr
	ttl := uint32(1 << 31)
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A); ok {
				addrs = append(addrs, ip.Unmap())
				ttl = min(ttl, a.Hdr.Ttl)
			}
		}
	}
	return addrs, time.Duration(ttl) * time.Second
}

// Charge takes one query from caller's DNS budget, as a query it sent
// would, and says whether there was one: what a lookup on the sandbox's
// behalf (policy.Verdicts.Charge, the router's Host and SNI checks) spends,
// so that it is no way around the sandbox's rate.
func (s *Shim) Charge(caller policy.Caller) bool {
	return s.limit.AllowAt(caller.Sandbox, policy.Or(caller.Limits.DNSQPS, s.limit.Rate()), time.Now())
}

// LookupA resolves name through the upstream resolvers, for the daemon's own
// consistency checks. It returns the addresses and their TTL.
func (s *Shim) LookupA(name string) ([]netip.Addr, time.Duration, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	resp, err := s.forward(q, false)
	if err != nil {
		return nil, 0, err
	}
	addrs, ttl := aRecords(resp)
	return addrs, ttl, nil
}

func (s *Shim) forward(r *dns.Msg, overTCP bool) (*dns.Msg, error) {
	if len(s.cfg.Upstreams) == 0 {
		return nil, errors.New("no upstream resolvers configured")
	}
	deadline := time.Now().Add(s.cfg.Timeout)
	var errs []error
	for i, up := range s.cfg.Upstreams {
		var resp *dns.Msg
		var err error
		if overTCP {
			ctx, cancel := context.WithDeadline(context.Background(), deadline)
			resp, _, err = s.tcp.ExchangeContext(ctx, r, up)
			cancel()
		} else {
			resp, err = s.udp[i].exchange(r, deadline)
		}
		// A truncated UDP answer goes back as it is: the client retries over
		// TCP, which the shim captures and forwards over TCP.
		s.cfg.Metrics.upstream(err)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("upstream %s: %w", up, err))
		if !time.Now().Before(deadline) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func isTCP(w dns.ResponseWriter) bool {
	_, ok := w.RemoteAddr().(*net.TCPAddr)
	return ok
}

func sourceAddr(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// Server is the shim listening on UDP and TCP.
type Server struct {
	udp *udpServer
	tcp *dns.Server
	wg  sync.WaitGroup
}

// ListenConfig shapes the shim's listeners.
type ListenConfig struct {
	// MaxTCPConnsPerSandbox caps the TCP connections one source address (a
	// sandbox) may hold open, so that one holding idle or trickling ones
	// cannot use up the daemon's file descriptors; more are reset at once.
	// 0 means no cap.
	MaxTCPConnsPerSandbox int
	// MaxTCPConns, when set, is asked for the cap at each connection in
	// place of MaxTCPConnsPerSandbox (a cap a config reload may change).
	MaxTCPConns func() int
	// Metrics counts the connections reset over the cap.
	Metrics *Metrics
}

// Listen binds UDP and TCP on addr and starts serving h, with no cap on TCP
// connections.
func Listen(addr string, h dns.Handler) (*Server, error) { return ListenConfig{}.Listen(addr, h) }

// Listen binds UDP and TCP on addr and starts serving h.
func (lc ListenConfig) Listen(addr string, h dns.Handler) (*Server, error) {
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("dns listen address %s: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp4", ua)
	if err != nil {
		return nil, fmt.Errorf("listening for dns on udp %s: %w", addr, err)
	}
	// One socket serves every sandbox: a deep buffer absorbs bursts (the
	// kernel caps each sandbox's rate before it gets here).
	// SO_RCVBUFFORCE (we hold CAP_NET_ADMIN): SetReadBuffer alone is
	// capped by net.core.rmem_max, 208 KiB on a stock host.
	pc.SetReadBuffer(4 << 20)
	if rc, err := pc.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) })
	}
	udp, err := newUDPServer(pc, h)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("dns udp socket %s: %w", addr, err)
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("listening for dns on tcp %s: %w", addr, err)
	}
	// An idle or trickling connection is closed after ReadTimeout (the
	// first query) or IdleTimeout (the next ones); the cap bounds how many
	// one sandbox holds meanwhile.
	if lc.MaxTCPConns != nil {
		ln = connlimit.PerSourceFunc(ln, func(netip.Addr) int { return lc.MaxTCPConns() }, lc.Metrics.rejectedTCPConn)
	} else {
		ln = connlimit.PerSource(ln, lc.MaxTCPConnsPerSandbox, lc.Metrics.rejectedTCPConn)
	}
	s := &Server{
		udp: udp,
		tcp: &dns.Server{Listener: ln, Handler: h, ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }},
	}
	// Returned only once the TCP server runs: miekg/dns refuses to shut
	// down a server that has not started yet, which left a Shutdown right
	// after Listen waiting forever.
	started, failed := make(chan struct{}), make(chan error, 1)
	s.tcp.NotifyStartedFunc = func() { close(started) }
	udp.serve()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.tcp.ActivateAndServe(); err != nil {
			failed <- err
			slog.Error("dns server stopped", "error", err)
		}
	}()
	select {
	case <-started:
	case err := <-failed:
		udp.shutdown()
		ln.Close()
		return nil, fmt.Errorf("serving dns on tcp %s: %w", addr, err)
	}
	return s, nil
}

// UDPAddr is the bound UDP address.
func (s *Server) UDPAddr() net.Addr { return s.udp.conn.LocalAddr() }

// TCPAddr is the bound TCP address.
func (s *Server) TCPAddr() net.Addr { return s.tcp.Listener.Addr() }

// Shutdown stops both listeners and waits for them.
func (s *Server) Shutdown(ctx context.Context) error {
	err := errors.Join(s.udp.shutdown(), s.tcp.ShutdownContext(ctx))
	s.wg.Wait()
	return err
}

// Forget drops what the shim keeps about a deleted sandbox.
func (s *Shim) Forget(sandbox string) { s.limit.Forget(sandbox) }

// Reloadable serves DNS through the Shim stored last: a config reload
// makes a new Shim (names, upstreams, timeouts, rates) and swaps it in, and
// a query already being answered finishes with the one it started on.
// Listen takes it in place of a Shim, fast path included.
type Reloadable struct{ cur atomic.Pointer[Shim] }

// NewReloadable returns a Reloadable serving through s.
func NewReloadable(s *Shim) *Reloadable {
	r := &Reloadable{}
	r.cur.Store(s)
	return r
}

// Swap serves through s from now on, and closes the previous Shim's
// upstream sockets (an exchange still under way finishes on them).
func (r *Reloadable) Swap(s *Shim) {
	if old := r.cur.Swap(s); old != nil {
		old.Close()
	}
}

// ServeDNS answers through the current Shim.
func (r *Reloadable) ServeDNS(w dns.ResponseWriter, m *dns.Msg) { r.cur.Load().ServeDNS(w, m) }

// LookupA is the current Shim's.
func (r *Reloadable) LookupA(name string) ([]netip.Addr, time.Duration, error) {
	return r.cur.Load().LookupA(name)
}

// Charge is the current Shim's (the limiter is shared, see Config.Limiter).
func (r *Reloadable) Charge(caller policy.Caller) bool { return r.cur.Load().Charge(caller) }

// Forget is the current Shim's (the limiter is shared, see Config.Limiter).
func (r *Reloadable) Forget(sandbox string) { r.cur.Load().Forget(sandbox) }

// Close closes the current Shim's upstream sockets.
func (r *Reloadable) Close() { r.cur.Load().Close() }
