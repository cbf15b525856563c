package dnsshim

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// The UDP side of the shim is served here rather than by dns.Server, which
// starts a goroutine and unpacks a full dns.Msg for every packet. Handler
// names, the queries a sandbox makes most, are answered in the reading
// goroutine straight from the packet's bytes (fastAnswer), with the same
// decisions, limits and metrics as the full path. Every other query is
// unpacked by miekg/dns and handed to ServeDNS in a goroutine of its own,
// since forwarding it waits on an upstream.

// maxSlow bounds the queries waiting on the full path at once, and
// maxSlowPerSource those from one address (a sandbox: sources cannot be
// forged), so that one sandbox asking for names whose servers never answer
// cannot hold every slot for the upstream timeout. Beyond either a query is
// dropped and the client retries, as it would a lost packet.
const (
	maxSlow          = 4096
	maxSlowPerSource = 128
)

// maxQuery is the largest query read; larger datagrams are cut and fail to
// parse (dns.Server reads 512 bytes).
const maxQuery = 4096

type udpServer struct {
	conn *net.UDPConn
	h    dns.Handler
	shim func() *Shim // the fast path, when h is a *Shim or a *Reloadable
	slow chan struct{}
	wg   sync.WaitGroup

	slowMu  sync.Mutex
	slowPer map[netip.Addr]int
	work    chan slowQuery // to an idle worker
	done    chan struct{}  // closed at shutdown: idle workers leave

	mu     sync.Mutex
	closed bool
}

func newUDPServer(conn *net.UDPConn, h dns.Handler) (*udpServer, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	// IP_PKTINFO gives each query's destination: captured queries arrive
	// redirected to the sandbox's gateway address, and the answer must come
	// from that address for conntrack to undo the redirect.
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, serr
	}
	u := &udpServer{conn: conn, h: h, slow: make(chan struct{}, maxSlow), slowPer: map[netip.Addr]int{},
		work: make(chan slowQuery), done: make(chan struct{})}
	switch h := h.(type) {
	case *Shim:
		u.shim = func() *Shim { return h }
	case *Reloadable:
		u.shim = h.cur.Load
	}
	return u, nil
}

// cpus is the CPUs the process may use as Go counted them at start (or
// GOMAXPROCS from the environment): read before the daemon raises
// GOMAXPROCS to two Go processors per CPU, which would count each twice.
var cpus = runtime.GOMAXPROCS(0)

func (u *udpServer) serve() {
	// Readers of one socket take turns on it, and each handoff between
	// them costs a futex wake-up: a second reader adds that cost more than
	// it adds answers until there are CPUs enough to keep readers busy, so
	// a small host gets one, a large host one per four CPUs.
	n := max(1, cpus/4)
	u.wg.Add(n)
	for range n {
		go u.read()
	}
}

func (u *udpServer) isClosed() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.closed
}

func (u *udpServer) shutdown() error {
	u.mu.Lock()
	if !u.closed {
		close(u.done)
	}
	u.closed = true
	u.mu.Unlock()
	err := u.conn.Close()
	u.wg.Wait()
	return err
}

// pktinfoOOB is a control message setting a reply's source address; src is
// patched in per reply.
type pktinfoOOB struct {
	b   []byte
	src int // offset of ipi_spec_dst
}

func newPktinfoOOB() pktinfoOOB {
	b := unix.PktInfo4(&unix.Inet4Pktinfo{})
	return pktinfoOOB{b: b, src: unix.CmsgLen(0) + 4}
}

func (p pktinfoOOB) from(a netip.Addr) []byte {
	if !a.Is4() {
		return nil
	}
	a4 := a.As4()
	copy(p.b[p.src:], a4[:])
	return p.b
}

// pktDst returns the destination address an IP_PKTINFO message carries.
func pktDst(oob []byte) netip.Addr {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return netip.Addr{}
		}
		if h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo {
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
			return netip.AddrFrom4([4]byte(data[8:12]))
		}
		oob = rest
	}
	return netip.Addr{}
}

// batch is how many datagrams one system call reads or writes at most:
// under load, recvmmsg and sendmmsg carry many queries per call.
const batch = 32

func (u *udpServer) read() {
	defer u.wg.Done()
	pc := ipv4.NewPacketConn(u.conn)
	in := make([]ipv4.Message, batch)
	for i := range in {
		in[i].Buffers = [][]byte{make([]byte, maxQuery)}
		in[i].OOB = make([]byte, 128)
	}
	var qs querySeries // this reader's
	slots := make([]ipv4.Message, batch)
	outOOB := make([]pktinfoOOB, batch)
	for i := range slots {
		slots[i].Buffers = [][]byte{make([]byte, 0, 512)}
		outOOB[i] = newPktinfoOOB()
	}
	for {
		n, err := pc.ReadBatch(in, 0)
		if err != nil {
			if u.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		k := 0
		for i := range in[:n] {
			m := &in[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok || m.N < headerLen {
				continue // not even a header: no answer, as dns.Server
			}
			from := ua.AddrPort()
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			dst := pktDst(m.OOB[:m.NN])
			pkt := m.Buffers[0][:m.N]
			if u.shim != nil {
				slot := &slots[k]
				if resp, ok := u.shim().fastAnswer(pkt, from.Addr(), slot.Buffers[0][:0], &qs); ok {
					slot.Buffers[0], slot.OOB, slot.Addr = resp, outOOB[k].from(dst), ua
					k++
					continue
				}
			}
			if !u.takeSlot(from.Addr()) {
				continue // overloaded: dropped, the client retries
			}
			u.dispatch(slowQuery{append([]byte(nil), pkt...), from, dst})
		}
		for out := slots[:k]; len(out) > 0; {
			sent, err := pc.WriteBatch(out, 0)
			if err != nil {
				// One bad destination must not hold back the others.
				sent = max(sent, 1)
			}
			out = out[sent:]
		}
	}
}

// slowQuery is a query for the full path, which holds a slot for it.
type slowQuery struct {
	pkt  []byte
	from netip.AddrPort
	dst  netip.Addr
}

// workerIdle is how long a worker of the full path waits for another
// query before it leaves.
const workerIdle = 5 * time.Second

// dispatch hands q to an idle worker, or to a new one. Workers stay for
// more: a goroutine per query grows its stack anew every time (a forward
// runs deep, through miekg/dns, net and the poller), work done again for
// every query that a waiting worker does once. There are never more workers than slots
// taken, and none wait when no query has come for workerIdle.
func (u *udpServer) dispatch(q slowQuery) {
	select {
	case u.work <- q:
	default:
		go u.worker(q)
	}
}

func (u *udpServer) worker(q slowQuery) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		u.serveSlow(q.pkt, q.from, q.dst)
		u.releaseSlot(q.from.Addr())
		q = slowQuery{} // an idle worker holds no query's bytes
		idle.Reset(workerIdle)
		select {
		case q = <-u.work:
		case <-idle.C:
			return
		case <-u.done:
			return
		}
	}
}

// takeSlot reserves a place on the full path for a query from src.
func (u *udpServer) takeSlot(src netip.Addr) bool {
	u.slowMu.Lock()
	defer u.slowMu.Unlock()
	if u.slowPer[src] >= maxSlowPerSource {
		return false
	}
	select {
	case u.slow <- struct{}{}:
	default:
		return false
	}
	u.slowPer[src]++
	return true
}

func (u *udpServer) releaseSlot(src netip.Addr) {
	u.slowMu.Lock()
	if u.slowPer[src]--; u.slowPer[src] <= 0 {
		delete(u.slowPer, src)
	}
	u.slowMu.Unlock()
	<-u.slow
}

// serveSlow is dns.Server's handling of one packet: accept or reject by
// header, unpack, and hand to the handler.
func (u *udpServer) serveSlow(pkt []byte, from netip.AddrPort, dst netip.Addr) {
	w := &udpWriter{u: u, from: from, dst: dst}
	dh := dns.Header{
		Id: binary.BigEndian.Uint16(pkt), Bits: binary.BigEndian.Uint16(pkt[2:]),
		Qdcount: binary.BigEndian.Uint16(pkt[4:]), Ancount: binary.BigEndian.Uint16(pkt[6:]),
		Nscount: binary.BigEndian.Uint16(pkt[8:]), Arcount: binary.BigEndian.Uint16(pkt[10:]),
	}
	action := dns.DefaultMsgAcceptFunc(dh)
	req := new(dns.Msg)
	if action == dns.MsgAccept {
		if err := req.Unpack(pkt); err == nil {
			u.h.ServeDNS(w, req)
			return
		}
		action = dns.MsgReject
	}
	if action == dns.MsgIgnore {
		return
	}
	resp := &dns.Msg{MsgHdr: dns.MsgHdr{Id: dh.Id, Response: true, Opcode: dns.OpcodeQuery, Rcode: dns.RcodeFormatError}}
	if action == dns.MsgRejectNotImplemented {
		resp.Opcode, resp.Rcode = int(dh.Bits>>11)&0xF, dns.RcodeNotImplemented
	}
	w.WriteMsg(resp)
	if u.shim != nil {
		u.shim().cfg.Metrics.observe(nil, AnswerMalformed, "", resp.Rcode, time.Now())
	}
}

// udpWriter is the dns.ResponseWriter of one UDP query on the full path.
type udpWriter struct {
	u    *udpServer
	from netip.AddrPort
	dst  netip.Addr
}

func (w *udpWriter) LocalAddr() net.Addr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(w.dst, 0))
}
func (w *udpWriter) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(w.from) }

func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func (w *udpWriter) Write(b []byte) (int, error) {
	n, _, err := w.u.conn.WriteMsgUDPAddrPort(b, newPktinfoOOB().from(w.dst), w.from)
	return n, err
}

func (w *udpWriter) Close() error        { return nil }
func (w *udpWriter) TsigStatus() error   { return nil }
func (w *udpWriter) TsigTimersOnly(bool) {}
func (w *udpWriter) Hijack()             {}

const headerLen = 12

// fastName is a handler name as the fast path finds it: the lowercase
// fully qualified name (the key, reused so a lookup allocates nothing) and
// its address.
type fastName struct {
	name string
	a    [4]byte
}

// fastAnswer answers a query for a handler name from its bytes, appending
// the response to out. It reports false for anything else — another name, a
// source that is not a sandbox, an unusual packet — and leaves that to the
// full path, having changed nothing. The answers are ServeDNS's: the fuzz
// test FuzzFastAnswerMatchesServeDNS holds the two to it.
func (s *Shim) fastAnswer(q []byte, src netip.Addr, out []byte, qs *querySeries) ([]byte, bool) {
	if len(q) < headerLen+5 {
		return nil, false
	}
	bits := binary.BigEndian.Uint16(q[2:])
	const qr, opcodeMask, rd, cd = 1 << 15, 0xF << 11, 1 << 8, 1 << 4
	if bits&qr != 0 || bits&opcodeMask != 0 ||
		binary.BigEndian.Uint16(q[4:]) != 1 || binary.BigEndian.Uint16(q[6:]) != 0 ||
		binary.BigEndian.Uint16(q[8:]) != 0 || binary.BigEndian.Uint16(q[10:]) > 1 {
		return nil, false
	}
	// The question's name, lowercased, in presentation form. Only plain
	// hostname bytes: anything miekg/dns would escape goes the full way.
	var name [256]byte
	n, off := 0, headerLen
	for {
		if off >= len(q) {
			return nil, false
		}
		l := int(q[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(q) || n+l+1 > 254 {
			return nil, false
		}
		for _, c := range q[off : off+l] {
			switch {
			case c >= 'A' && c <= 'Z':
				c += 'a' - 'A'
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			default:
				return nil, false
			}
			name[n] = c
			n++
		}
		name[n] = '.'
		n++
		off += l
	}
	if n == 0 || off+4 > len(q) {
		return nil, false
	}
	qtype, qclass := binary.BigEndian.Uint16(q[off:]), binary.BigEndian.Uint16(q[off+2:])
	qEnd := off + 4
	if qclass != dns.ClassINET || !plainEDNS(q[qEnd:], binary.BigEndian.Uint16(q[10:]) == 1) {
		return nil, false
	}
	fn, ok := s.fast[string(name[:n])]
	if !ok {
		return nil, false
	}
	caller, ok := s.cfg.Identify(src)
	if !ok {
		return nil, false
	}
	if caller.Worker != "" && s.cfg.WorkerName != nil {
		// The worker may serve the name before the handler does: the
		// full path asks it.
		return nil, false
	}

	start := time.Now()
	kind, rcode := AnswerHandler, dns.RcodeSuccess
	flags := uint16(qr) | bits&(rd|cd)
	answer := qtype == dns.TypeA || qtype == dns.TypeANY
	if !s.limit.AllowAt(caller.Sandbox, policy.Or(caller.Limits.DNSQPS, s.limit.Rate()), start) {
		kind, rcode, answer = AnswerLimited, dns.RcodeRefused, false
	} else {
		flags |= 1 << 7 // RA
		if caller.Policy != nil {
			d := s.cfg.Verdicts.DNSQuery(caller, fn.name, true)
			var ds *policy.Series
			if qs != nil {
				ds = &qs.decisions
			}
			s.cfg.Decisions.ObserveInto(ds, "dns", caller.Sandbox, d)
			if !d.Allowed() {
				kind, rcode, answer = AnswerDenied, s.cfg.DeniedRcode, false
				s.cfg.Logger.Info("dns denied", "sandbox", caller.Sandbox, "reason", d.Reason, "pattern", d.Pattern)
			}
		}
		if kind == AnswerHandler {
			flags |= 1 << 10 // AA
		}
	}
	flags |= uint16(rcode & 0xF)

	out = append(out, q[0], q[1], byte(flags>>8), byte(flags), 0, 1, 0, 0, 0, 0, 0, 0)
	out = append(out, q[headerLen:qEnd]...)
	if answer {
		out[7] = 1 // ANCOUNT
		ttl := s.cfg.TTL
		out = append(out, 0xC0, headerLen, // the question's name
			0, byte(dns.TypeA), 0, byte(dns.ClassINET),
			byte(ttl>>24), byte(ttl>>16), byte(ttl>>8), byte(ttl),
			0, 4, fn.a[0], fn.a[1], fn.a[2], fn.a[3])
	}
	s.cfg.Metrics.observe(qs, kind, caller.Sandbox, rcode, start)
	return out, true
}

// plainEDNS reports whether what follows the question is nothing, or (when
// hasOPT) exactly one OPT record whose options are all cookies, as dig
// sends: the shapes the fast path knows miekg/dns to accept too.
func plainEDNS(rest []byte, hasOPT bool) bool {
	if !hasOPT {
		return len(rest) == 0
	}
	// root name, type, class (UDP size), TTL (extended rcode, flags), rdlength
	if len(rest) < 11 || rest[0] != 0 || binary.BigEndian.Uint16(rest[1:]) != dns.TypeOPT {
		return false
	}
	rd := rest[11:]
	if int(binary.BigEndian.Uint16(rest[9:])) != len(rd) {
		return false
	}
	for len(rd) > 0 {
		if len(rd) < 4 {
			return false
		}
		code, l := binary.BigEndian.Uint16(rd), int(binary.BigEndian.Uint16(rd[2:]))
		if code != dns.EDNS0COOKIE || l < 8 || l > 40 || 4+l > len(rd) {
			return false
		}
		rd = rd[4+l:]
	}
	return true
}
