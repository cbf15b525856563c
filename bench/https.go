package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Issue 20's paths: HTTPS through the TLS front's passthrough against the
// same upstream reached directly (routed, not intercepted). The upstream
// serves TLS on 192.0.2.2:443 with a certificate for example.bench (which
// the daemon's upstream dnsmasq resolves to it); wrk and curl do not
// verify it, the daemon never sees inside.
//
// The same upstream answers on 192.0.2.4:443 as well: the HAProxy client's
// example.bench (its hosts file) for HAProxy's SNI passthrough, an address
// of its own so that the tproxy rule can send it to that frontend rather
// than to the one terminating TLS on 192.0.2.2 (haproxyTLS).

// startHTTPSUpstream serves a fixed 200 and /big (bigMiB MiB, streamed) over
// TLS in the upstream namespace.
func (b *bench) startHTTPSUpstream() {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "example.bench"}, DNSNames: []string{"example.bench"},
		IPAddresses: []net.IP{net.ParseIP("192.0.2.2")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(err)
	var ln net.Listener
	must(inNetns("/run/netns/"+b.upNS, func() (err error) { ln, err = net.Listen("tcp4", "192.0.2.2:443"); return }))
	sh("ip", "-n", b.upNS, "addr", "add", "192.0.2.4/24", "dev", "eth0")
	var ln4 net.Listener
	must(inNetns("/run/netns/"+b.upNS, func() (err error) { ln4, err = net.Listen("tcp4", "192.0.2.4:443"); return }))
	chunk := make([]byte, 1<<20)
	srv := &http.Server{
		// wrk ends its runs with connections mid-handshake: not news.
		ErrorLog:  log.New(io.Discard, "", 0),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/big" {
				w.Header().Set("Content-Length", strconv.Itoa(*bigMiB<<20))
				for i := 0; i < *bigMiB; i++ {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
				return
			}
			w.Header().Set("Content-Length", "3")
			w.Write([]byte("ok\n"))
		}),
	}
	go srv.ServeTLS(ln, "", "")
	go srv.ServeTLS(ln4, "", "")
	b.defer_(func() { srv.Close() })
}

// httpsBulk downloads /big directly, through the daemon's passthrough and
// (with HAProxy) through HAProxy's SNI passthrough, three times each: the
// direct first in each round, the other two in turn forward and backward,
// and prints the throughput of each, their ratios and the proxies' CPU per
// MiB.
func (b *bench) httpsBulk() {
	// get downloads url from ns and returns the rate, pid's CPU per MiB,
	// the client's (curl's) CPU per MiB and the share of the machine's
	// CPU time that stayed idle meanwhile: the client's figure shows what
	// the hop's way of sending costs the receiver in the sandbox, the idle
	// share whether the two CPUs were the bound.
	get := func(ns, url string, pid int) (mbps, cpuPerMiB, clientPerMiB, idle float64) {
		cpu0 := procCPU(pid)
		st0 := machineCPU()
		start := time.Now()
		cmd := exec.Command("ip", "netns", "exec", ns, "curl", "-sSk", "-o", "/dev/null", "-w", "%{size_download}", url)
		out, err := cmd.CombinedOutput()
		d := time.Since(start)
		must(err)
		if n, _ := strconv.Atoi(strings.TrimSpace(string(out))); n != *bigMiB<<20 {
			must(fmt.Errorf("%s: %s bytes, want %d", url, out, *bigMiB<<20))
		}
		cpu := procCPU(pid) - cpu0
		st1 := machineCPU()
		client := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime() // ip netns exec execs curl
		return float64(*bigMiB) * 1.048576 / d.Seconds(), float64(cpu.Microseconds()) / float64(*bigMiB),
			float64(client.Microseconds()) / float64(*bigMiB), st1.idleSince(st0)
	}
	type dl struct {
		name, ns, url string
		pid           int
		mbps, cpu     []float64
		client, idle  []float64
	}
	dls := []*dl{
		{name: "direct", ns: b.cliNS, url: "https://192.0.2.2/big"},
		{name: "daemon", ns: b.sandboxNS, url: "https://example.bench/big", pid: b.daemon.Process.Pid},
	}
	if b.haproxy != nil {
		dls = append(dls, &dl{name: "HAProxy", ns: b.hapNS, url: "https://example.bench/big", pid: b.haproxy.Process.Pid})
	}
	load0 := loadavg()
	for r := 0; r < 3; r++ {
		for _, i := range roundOrder(len(dls), r) {
			d := dls[i]
			pid := d.pid
			if pid == 0 {
				pid = b.daemon.Process.Pid // the direct path: the daemon should spend nothing
			}
			m, c, cl, idle := get(d.ns, d.url, pid)
			d.mbps, d.cpu = append(d.mbps, m), append(d.cpu, c)
			d.client, d.idle = append(d.client, cl), append(d.idle, idle)
		}
	}
	each := func(xs []float64, f string) string {
		var s []string
		for _, x := range xs {
			s = append(s, fmt.Sprintf(f, x))
		}
		return strings.Join(s, " ")
	}
	ratios := func(a, b *dl) string {
		var rs []float64
		for r := range a.mbps {
			rs = append(rs, a.mbps[r]/b.mbps[r])
		}
		return fmt.Sprintf("%.2f× (rounds %s)", median(rs), each(rs, "%.2f"))
	}
	fmt.Printf("\nHTTPS %d MiB download, MB/s (median; rounds):\n", *bigMiB)
	for _, d := range dls {
		cpu := ""
		if d.pid != 0 {
			cpu = fmt.Sprintf("; %s CPU %.0f µs per MiB (rounds %s)", d.name, median(d.cpu), each(d.cpu, "%.0f"))
		}
		fmt.Printf("  %-8s %4.0f (%s)%s\n", d.name, median(d.mbps), each(d.mbps, "%.0f"), cpu)
	}
	fmt.Printf("  the client's (curl's) CPU µs per MiB, and the machine's idle share meanwhile (median; rounds):\n")
	for _, d := range dls {
		fmt.Printf("  %-8s %4.0f (%s), idle %.0f%% (%s)\n", d.name, median(d.client), each(d.client, "%.0f"),
			100*median(d.idle), each(scale(d.idle, 100), "%.0f%%"))
	}
	fmt.Printf("  daemon / direct %s (target ≥ 0.9)\n", ratios(dls[1], dls[0]))
	if len(dls) > 2 {
		fmt.Printf("  HAProxy / direct %s\n  daemon / HAProxy %s; CPU per MiB, daemon / HAProxy %.2f\n",
			ratios(dls[2], dls[0]), ratios(dls[1], dls[2]), median(dls[1].cpu)/median(dls[2].cpu))
	}
	fmt.Printf("load average (1, 5, 15 min): %s before the downloads, %s after\n", load0, loadavg())
}

// Issue 20's interception figures: the TLS front terminating TLS for
// tls.bench (a respond handler marked https: true, the floor's work) with a
// leaf from interceptd's CA, against HAProxy terminating TLS on the same hop
// with a static certificate and answering the same 200 itself. The HAProxy
// client's port 443 goes to HAProxy by nftables tproxy, as its port 80 does
// for the passthrough reference, and is never routed past it.

// haproxyTLS writes HAProxy's static certificate for tls.bench, makes
// tls.bench resolve to the upstream's address in the HAProxy client's
// namespace (its /etc/netns hosts file; the tproxy rule takes the
// connection before it is routed), and returns the HAProxy frontend that
// terminates TLS there.
//
// The certificate has the shape of the daemon's: an ECDSA P-256 leaf
// signed by an ECDSA P-256 CA, sent with the CA (two certificates), so
// that both sides sign and send the same.
func (b *bench) haproxyTLS() string {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench HAProxy CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(err)
	caCert, err := x509.ParseCertificate(caDER)
	must(err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "tls.bench"}, DNSNames: []string{"tls.bench", "tls-full.bench"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	must(err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	must(err)
	// HAProxy's crt: the leaf, the chain, the key, in one file.
	var bundle []byte
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	crt := filepath.Join(b.dir, "haproxy-tls.pem")
	must(os.WriteFile(crt, bundle, 0o600))
	must(os.WriteFile(filepath.Join(b.dir, "haproxy-ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644))

	etc := "/etc/netns/" + b.hapNS
	must(os.MkdirAll(etc, 0o755))
	b.defer_(func() { os.RemoveAll(etc) })
	must(os.WriteFile(filepath.Join(etc, "hosts"), []byte("127.0.0.1 localhost\n192.0.2.2 tls.bench\n192.0.2.3 tls-full.bench\n192.0.2.4 example.bench\n"), 0o644))

	// The daemon's front offers h2 and http/1.1 by ALPN; so does this
	// (wrk offers none: HTTP/1.1 on both). tls resumes sessions as HAProxy
	// does by default (TLS 1.3 tickets, which wrk presents on its next
	// connection); tls-full, reached at 192.0.2.3 (tls-full.bench), issues
	// no tickets and has no session cache (global), so that every
	// handshake is a full one, as on the daemon's front.
	//
	// sni is the daemon's passthrough done by HAProxy: TCP mode, the
	// ClientHello read (inspect-delay until req.ssl_hello_type says one
	// is complete), its server name accepted by an ACL (any other name,
	// or no hello, is rejected), then the connection forwarded to its
	// original destination (192.0.2.4:443) as the port-80 reference's
	// is: from HAProxy's own address, not the client's, as the daemon
	// dials. No splice option: HAProxy copies through its buffers.
	return `frontend sni
	mode tcp
	bind 0.0.0.0:18445 transparent
	tcp-request inspect-delay 5s
	acl hello req.ssl_hello_type 1
	acl allowed req.ssl_sni -i example.bench
	tcp-request content accept if hello allowed
	tcp-request content reject
	default_backend sni-original
backend sni-original
	mode tcp
	# 0.0.0.0, port 0: the connection's original destination and port.
	server original 0.0.0.0:0
frontend tls
	bind 0.0.0.0:18443 transparent ssl crt ` + crt + ` alpn h2,http/1.1
	http-request return status 200 content-type text/plain string "ok\n"
frontend tls-full
	bind 0.0.0.0:18444 transparent ssl crt ` + crt + ` alpn h2,http/1.1 no-tls-tickets
	http-request return status 200 content-type text/plain string "ok\n"
`
}

// checkHAProxyTLS proves HAProxy's TLS path before the rounds: the answer's
// certificate verifies against the benchmark's static CA (and port 443 from
// that client is never routed).
func (b *bench) checkHAProxyTLS() {
	for _, url := range []string{"https://tls.bench/", "https://tls-full.bench/"} {
		out, err := exec.Command("ip", "netns", "exec", b.hapNS, "curl", "-sSf", "-m", "5", "--cacert", filepath.Join(b.dir, "haproxy-ca.pem"), url).CombinedOutput()
		if err != nil || string(out) != "ok\n" {
			must(fmt.Errorf("haproxy's TLS path %s: %v %q", url, err, out))
		}
	}
	// The SNI passthrough: example.bench reaches the upstream's TLS
	// (not verified: its certificate is the upstream's own); another name
	// on the same address is refused by the ACL.
	out, err := exec.Command("ip", "netns", "exec", b.hapNS, "curl", "-sSfk", "-m", "5", "https://example.bench/").CombinedOutput()
	if err != nil || string(out) != "ok\n" {
		must(fmt.Errorf("haproxy's SNI passthrough: %v %q", err, out))
	}
	if out, err := exec.Command("ip", "netns", "exec", b.hapNS, "curl", "-sSfk", "-m", "5", "--resolve", "other.bench:443:192.0.2.4", "https://other.bench/").CombinedOutput(); err == nil {
		must(fmt.Errorf("haproxy's SNI passthrough let other.bench through: %q", out))
	}
}

// checkInterceptedTLS proves the intercepted path before the rounds: from
// the sandbox, tls.bench answers behind a certificate that verifies against
// interceptd's CA (made in <data_dir>/ca).
func (b *bench) checkInterceptedTLS() {
	out, err := exec.Command("ip", "netns", "exec", b.sandboxNS, "curl", "-sSf", "-m", "5", "--cacert", filepath.Join(b.dir, "data", "ca", "ca.pem"), "https://tls.bench/").CombinedOutput()
	if err != nil || string(out) != "ok\n" {
		must(fmt.Errorf("the intercepted HTTPS path: %v %q", err, out))
	}
}

// loadavg is the machine's load average (/proc/loadavg's first three).
func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

type tlsCounts struct{ intercepted, certs float64 }

var (
	interceptedRE = regexp.MustCompile(`(?m)^interceptd_tls_connections_total\{outcome="intercepted"\} ([0-9.e+]+)$`)
	certsRE       = regexp.MustCompile(`(?m)^interceptd_tls_certificates_total\{[^}]*\} ([0-9.e+]+)$`)
)

// tlsCounts reads the daemon's intercepted TLS connections and the
// certificates its front sent (one per full handshake: a resumed one sends
// none), from its metrics; zeros if they cannot be read.
func (b *bench) tlsCounts() tlsCounts {
	out, err := exec.Command("ip", "netns", "exec", b.hostNS, "curl", "-sS", "-m", "5", "http://127.0.0.1:9780/metrics").Output()
	if err != nil {
		return tlsCounts{}
	}
	var c tlsCounts
	if m := interceptedRE.FindSubmatch(out); m != nil {
		c.intercepted, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	for _, m := range certsRE.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		c.certs += v
	}
	return c
}

// cpuTimes are the machine's CPU times from /proc/stat's first line, in
// USER_HZ: user to steal, and of them idle and iowait.
type cpuTimes struct{ total, idle float64 }

func machineCPU() cpuTimes {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	var t cpuTimes
	for i, f := range strings.Fields(line)[1:] {
		if i >= 8 {
			break // guest and guest_nice are counted in user and nice already
		}
		v, _ := strconv.ParseFloat(f, 64)
		t.total += v
		if i == 3 || i == 4 { // idle, iowait
			t.idle += v
		}
	}
	return t
}

// idleSince is the share of the CPU time since t0 that was idle.
func (t cpuTimes) idleSince(t0 cpuTimes) float64 {
	if t.total <= t0.total {
		return 0
	}
	return (t.idle - t0.idle) / (t.total - t0.total)
}

func scale(xs []float64, k float64) []float64 {
	r := make([]float64, len(xs))
	for i, x := range xs {
		r[i] = x * k
	}
	return r
}
