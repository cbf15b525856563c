package router

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/interceptd/interceptd/policy"
)

// Program is a worker as the dispatch sees it: which of its functions
// serves a request. router/worker implements it; the router asks the
// caller's Program (policy.Caller.Worker, through Config.Programs) before
// its built-in handlers.
//
// Route.Name is a metric label: a Program names its routes from what the
// config bounds (the worker's name, "worker:<name>" for a per-host
// function and "worker:<name>:outbound" for outbound), never from the
// request's host.
//
// A worker's functions are handlers: they answer in the daemon, so the
// checks that guard where a forward goes (protected and private
// destinations, the Host's consistency with the address) were not made
// for them, and a function is reached whatever address the sandbox
// dialled. Whatever sends the sandbox's request on to its original
// destination (fetch(request)) must make those checks itself, as the
// router's Fallback does.
type Program interface {
	// Match returns the route of the outboundByHost function whose key
	// matches host (normalised: policy.NormalizeHost) or the destination
	// address (IPv4 / CIDR keys), with its port; ok false when none does.
	// HostPatterns implements the matching.
	Match(host string, dest netip.AddrPort) (Route, bool)
	// Outbound returns the route of the outbound function, if the script
	// has one: the caller's catch-all.
	Outbound() (Route, bool)
}

// WorkerLabel and WorkerOutboundLabel are the metric labels of a worker's
// per-host functions and of its outbound function: one series per worker
// (and per kind of function), whatever hosts the functions serve.
func WorkerLabel(worker string) string         { return "worker:" + worker }
func WorkerOutboundLabel(worker string) string { return "worker:" + worker + ":outbound" }

// HostPatterns matches a request against keys, as a worker's
// outboundByHost writes them: an exact hostname ("my.kv"), a glob of the
// form "*.example.com" (any name with at least one label before
// ".example.com", not example.com itself), an IP address or a CIDR; each
// optionally with ":port" (IPv6 in brackets), which then matches only
// that destination port. Keys parse as policy patterns do
// (policy.ParsePattern), less globs with a '*' anywhere but in front.
//
// The most specific key wins: an exact name, then the glob with the
// longest suffix, then the narrowest CIDR (an address is a /32); a name
// key is tried only against a Host that names a name, an address key
// against the destination address the sandbox dialled. Between two keys
// that differ only in the port, the one with the port wins.
//
// The zero value matches nothing. It is not safe for Add concurrently
// with Match; build it, then share it.
type HostPatterns[T any] struct {
	exact map[string][]patternEntry[T] // name → entries, port-specific first
	globs []patternEntry[T]            // longest suffix first
	addrs []patternEntry[T]            // narrowest prefix first
}

type patternEntry[T any] struct {
	key    string       // as written
	name   string       // exact name, or a glob's suffix with its leading dot (".example.com")
	prefix netip.Prefix // address keys
	port   uint16       // 0: any
	v      T
}

// Add adds key with value v. It fails on a key that is not a hostname,
// `*.` glob, IP or CIDR, and on one that repeats another (the same name or
// prefix and port however written).
func (h *HostPatterns[T]) Add(key string, v T) error {
	p, err := policy.ParsePattern(key)
	if err != nil {
		return err
	}
	e := patternEntry[T]{key: key, port: p.Port(), v: v}
	if p.IsAddress() {
		e.prefix = p.Prefix()
		for _, o := range h.addrs {
			if o.prefix == e.prefix && o.port == e.port {
				return fmt.Errorf("key %q repeats %q", key, o.key)
			}
		}
		h.addrs = append(h.addrs, e)
		slices.SortStableFunc(h.addrs, func(a, b patternEntry[T]) int {
			if c := cmp.Compare(b.prefix.Bits(), a.prefix.Bits()); c != 0 {
				return c
			}
			return portFirst(a.port, b.port)
		})
		return nil
	}
	name := strings.TrimSpace(key)
	if p.Port() != 0 {
		name = name[:strings.LastIndexByte(name, ':')]
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if strings.Contains(name, "*") {
		if !strings.HasPrefix(name, "*.") || strings.Contains(name[1:], "*") {
			return fmt.Errorf("key %q: a glob is \"*.\" then a name (*.example.com)", key)
		}
		e.name = name[1:]
		for _, o := range h.globs {
			if o.name == e.name && o.port == e.port {
				return fmt.Errorf("key %q repeats %q", key, o.key)
			}
		}
		h.globs = append(h.globs, e)
		slices.SortStableFunc(h.globs, func(a, b patternEntry[T]) int {
			if c := cmp.Compare(len(b.name), len(a.name)); c != 0 {
				return c
			}
			return portFirst(a.port, b.port)
		})
		return nil
	}
	e.name = name
	if h.exact == nil {
		h.exact = map[string][]patternEntry[T]{}
	}
	for _, o := range h.exact[name] {
		if o.port == e.port {
			return fmt.Errorf("key %q repeats %q", key, o.key)
		}
	}
	es := append(h.exact[name], e)
	slices.SortStableFunc(es, func(a, b patternEntry[T]) int { return portFirst(a.port, b.port) })
	h.exact[name] = es
	return nil
}

// portFirst orders a key with a port before one without.
func portFirst(a, b uint16) int {
	switch {
	case a != 0 && b == 0:
		return -1
	case a == 0 && b != 0:
		return 1
	}
	return 0
}

// Match returns the key (as written) and value of the most specific key
// that matches: host by name (host normalised, as policy.NormalizeHost
// leaves it; an IP literal or "" names no name), else dest by address;
// each on dest's port.
func (h *HostPatterns[T]) Match(host string, dest netip.AddrPort) (key string, v T, ok bool) {
	port := dest.Port()
	if host != "" && !isIPLiteral(host) {
		for _, e := range h.exact[host] {
			if e.port == 0 || e.port == port {
				return e.key, e.v, true
			}
		}
		for _, e := range h.globs {
			if (e.port == 0 || e.port == port) && len(host) > len(e.name) && strings.HasSuffix(host, e.name) {
				return e.key, e.v, true
			}
		}
	}
	if a := dest.Addr().Unmap(); a.IsValid() {
		for _, e := range h.addrs {
			if (e.port == 0 || e.port == port) && e.prefix.Contains(a) {
				return e.key, e.v, true
			}
		}
	}
	return "", v, false
}

// MatchName reports whether a name (a DNS question's, lowercased, without
// its trailing dot) is one a name key serves on some port, and the name
// of that key: the key's host part ("*.example.com" for a glob), the one
// name all the names it serves share. The DNS shim answers such names
// with a virtual address.
func (h *HostPatterns[T]) MatchName(name string) (keyName string, ok bool) {
	if name == "" || isIPLiteral(name) {
		return "", false
	}
	if es := h.exact[name]; len(es) > 0 {
		return name, true
	}
	for _, e := range h.globs {
		if len(name) > len(e.name) && strings.HasSuffix(name, e.name) {
			return "*" + e.name, true
		}
	}
	return "", false
}

// Names returns the host part of every name key: exact names, and globs
// as "*.example.com"; each once, in no particular order. They are what
// needs a virtual address.
func (h *HostPatterns[T]) Names() []string {
	var out []string
	for n := range h.exact {
		out = append(out, n)
	}
	for _, e := range h.globs {
		if n := "*" + e.name; !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Len is the number of keys.
func (h *HostPatterns[T]) Len() int {
	n := len(h.globs) + len(h.addrs)
	for _, es := range h.exact {
		n += len(es)
	}
	return n
}

func isIPLiteral(h string) bool {
	_, err := netip.ParseAddr(h)
	return err == nil
}
