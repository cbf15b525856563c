package dnsshim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// udpUpstream exchanges queries with one upstream resolver over UDP, on
// connected sockets it keeps for a while. A socket per query (miekg's
// Client dials one: a socket, a connect, a poller registration, a close)
// and a 64 KiB read buffer per query would put a socket's setup and
// teardown and a large allocation on every forwarded query.
//
// A socket carries one query at a time, so an answer is never handed to
// the wrong waiter. It is retired after sockUses queries or sockLife, so
// the source port keeps changing, and closed at once when an exchange on
// it fails, so a late answer is not left for the next query (one that
// comes anyway is skipped: its ID is not the query's). Each exchange gets
// a random ID of its own, never the query's: the sandbox chose that one.
// A sweep closes the idle sockets past sockLife, so none stay open once
// queries stop.
type udpUpstream struct {
	addr   string
	dialTo *net.UDPAddr // nil if addr is not an ip:port (a test's)
	// draw gives the random 16 bits an exchange's ID is drawn from; tests
	// script it to draw the sandbox's ID and see it redrawn.
	draw func() uint16

	mu      sync.Mutex
	idle    []*upSock
	janitor *time.Timer // closes idle sockets past sockLife while any idle
	closed  bool        // put closes what comes back
}

type upSock struct {
	c    *net.UDPConn
	uses int
	born time.Time
}

const (
	sockUses     = 64
	sockLife     = 10 * time.Second
	maxIdleSocks = 128 // per upstream: a burst of queries keeps its sockets
	// upBufSize is the read buffer of a query that advertises no larger
	// one: without EDNS an answer is 512 bytes at most, and most clients
	// advertise 1232 or 4096.
	upBufSize = 4096
)

// A read buffer has a byte more than the largest answer it takes, so that
// a larger one shows (a datagram is cut to the buffer without an error).
var upBufs = sync.Pool{New: func() any { return new([upBufSize + 1]byte) }}

func newUDPUpstream(addr string) *udpUpstream {
	u := &udpUpstream{addr: addr, draw: func() uint16 { return uint16(rand.Uint32()) }}
	if a, err := net.ResolveUDPAddr("udp", addr); err == nil && a.IP != nil {
		u.dialTo = a
	}
	return u
}

// exchange sends m and returns its answer, by deadline.
func (u *udpUpstream) exchange(m *dns.Msg, deadline time.Time) (*dns.Msg, error) {
	s, err := u.get()
	if err != nil {
		return nil, err
	}
	resp, err := s.exchange(m, u.exchangeID(m.Id), deadline)
	u.put(s, err == nil)
	return resp, err
}

// exchangeID draws the ID a query carries upstream: random, so that a
// forger off the path must guess it, and never the ID the sandbox gave
// the query (drawn again when it comes out the same), so that what the
// upstream sees owes nothing to what the sandbox chose.
func (u *udpUpstream) exchangeID(sandboxID uint16) uint16 {
	for {
		if id := u.draw(); id != sandboxID {
			return id
		}
	}
}

func (u *udpUpstream) get() (*upSock, error) {
	now := time.Now()
	var stale []*upSock
	u.mu.Lock()
	var s *upSock
	for len(u.idle) > 0 && s == nil {
		s = u.idle[len(u.idle)-1]
		u.idle[len(u.idle)-1] = nil
		u.idle = u.idle[:len(u.idle)-1]
		if now.Sub(s.born) >= sockLife {
			stale, s = append(stale, s), nil
		}
	}
	u.mu.Unlock()
	for _, st := range stale {
		st.c.Close()
	}
	if s != nil {
		return s, nil
	}
	var c net.Conn
	var err error
	if u.dialTo != nil {
		c, err = net.DialUDP("udp", nil, u.dialTo)
	} else {
		c, err = net.Dial("udp", u.addr)
	}
	if err != nil {
		return nil, err
	}
	return &upSock{c: c.(*net.UDPConn), born: now}, nil
}

// put keeps s for another query if its exchange went well and it has
// uses and life left; else closes it.
func (u *udpUpstream) put(s *upSock, ok bool) {
	s.uses++
	if ok && s.uses < sockUses && time.Since(s.born) < sockLife {
		u.mu.Lock()
		if !u.closed && len(u.idle) < maxIdleSocks {
			u.idle = append(u.idle, s)
			s = nil
			if u.janitor == nil {
				u.janitor = time.AfterFunc(sockLife, u.sweep)
			}
		}
		u.mu.Unlock()
	}
	if s != nil {
		s.c.Close()
	}
}

// sweep closes the idle sockets past sockLife, and comes back while any
// are idle: when queries stop, their sockets do not stay open.
func (u *udpUpstream) sweep() {
	now := time.Now()
	var stale []*upSock
	u.mu.Lock()
	kept := u.idle[:0]
	for _, s := range u.idle {
		if now.Sub(s.born) >= sockLife {
			stale = append(stale, s)
		} else {
			kept = append(kept, s)
		}
	}
	clear(u.idle[len(kept):])
	u.idle = kept
	if len(u.idle) > 0 && !u.closed {
		u.janitor.Reset(sockLife)
	} else {
		u.janitor = nil
	}
	u.mu.Unlock()
	for _, s := range stale {
		s.c.Close()
	}
}

// close closes the idle sockets; those of exchanges still under way are
// closed as they come back.
func (u *udpUpstream) close() {
	u.mu.Lock()
	idle := u.idle
	u.idle, u.closed = nil, true
	if u.janitor != nil {
		u.janitor.Stop()
		u.janitor = nil
	}
	u.mu.Unlock()
	for _, s := range idle {
		s.c.Close()
	}
}

var errTooLarge = errors.New("answer larger than the query allows")

// exchange sends m under id and returns its answer under m's own ID.
func (s *upSock) exchange(m *dns.Msg, id uint16, deadline time.Time) (*dns.Msg, error) {
	b := upBufs.Get().(*[upBufSize + 1]byte)
	defer upBufs.Put(b)
	buf := b[:]
	limit := upBufSize
	if opt := m.IsEdns0(); opt != nil && int(opt.UDPSize()) > limit {
		limit = int(opt.UDPSize())
		buf = make([]byte, limit+1)
	}
	out, err := m.PackBuffer(buf)
	if err != nil {
		return nil, fmt.Errorf("packing the query: %w", err)
	}
	binary.BigEndian.PutUint16(out, id)
	if err := s.c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if _, err := s.c.Write(out); err != nil {
		return nil, err
	}
	// Anything that is not the answer is skipped, and the wait goes on
	// to the deadline: a forged or stray datagram must not end the
	// exchange before the real answer comes.
	for {
		n, err := s.c.Read(buf)
		if err != nil {
			return nil, err
		}
		a := buf[:n]
		if n < headerLen || binary.BigEndian.Uint16(a) != id || a[2]&0x80 == 0 {
			continue // a late answer to an earlier query, or noise
		}
		if n > limit {
			// Without EDNS an answer is 512 bytes at most, and with it no
			// larger than advertised: the upstream does not follow DNS.
			return nil, errTooLarge
		}
		resp := new(dns.Msg)
		if resp.Unpack(a) != nil || !answers(resp, m) {
			continue
		}
		resp.Id = m.Id
		return resp, nil
	}
}

// answers reports whether resp is an answer to q: the one question asked,
// or none at all in an error answer that carries no records (some servers
// send FORMERR or REFUSED so).
func answers(resp, q *dns.Msg) bool {
	if len(q.Question) == 0 {
		return true
	}
	if len(resp.Question) == 0 {
		return resp.Rcode != dns.RcodeSuccess && len(resp.Answer) == 0 && len(resp.Ns) == 0
	}
	return len(resp.Question) == 1 && sameQuestion(resp.Question[0], q.Question[0])
}

func sameQuestion(a, b dns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}
