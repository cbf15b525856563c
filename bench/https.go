package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Issue 20's paths: HTTPS through the TLS front's passthrough against the
// same upstream reached directly (routed, not intercepted). The upstream
// serves TLS on 192.0.2.2:443 with a certificate for example.bench (which
// the daemon's upstream dnsmasq resolves to it); wrk and curl do not
// verify it, the daemon never sees inside.

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
	b.defer_(func() { srv.Close() })
}

// httpsBulk downloads /big once directly and once through the passthrough
// (the direct first, then alternately, twice each), and prints the
// throughput of each, their ratio and the daemon's CPU per MiB.
func (b *bench) httpsBulk() {
	get := func(ns, url string) (mbps float64, cpuPerMiB float64) {
		cpu0 := procCPU(b.daemon.Process.Pid)
		start := time.Now()
		out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-sSk", "-o", "/dev/null", "-w", "%{size_download}", url).CombinedOutput()
		d := time.Since(start)
		must(err)
		if n, _ := strconv.Atoi(strings.TrimSpace(string(out))); n != *bigMiB<<20 {
			must(fmt.Errorf("%s: %s bytes, want %d", url, out, *bigMiB<<20))
		}
		cpu := procCPU(b.daemon.Process.Pid) - cpu0
		return float64(*bigMiB) * 1.048576 / d.Seconds(), float64(cpu.Microseconds()) / float64(*bigMiB)
	}
	var direct, through, cpu []float64
	for i := 0; i < 2; i++ {
		d, _ := get(b.cliNS, "https://192.0.2.2/big")
		t, c := get(b.sandboxNS, "https://example.bench/big")
		direct, through, cpu = append(direct, d), append(through, t), append(cpu, c)
	}
	fmt.Printf("\nHTTPS %d MiB download: direct %.0f MB/s, through the TLS front's passthrough %.0f MB/s: %.2f× (target ≥ 0.9; runs %.0f/%.0f, %.0f/%.0f MB/s); daemon CPU %.0f µs per MiB passed\n",
		*bigMiB, median(direct), median(through), median(through)/median(direct), direct[0], through[0], direct[1], through[1], median(cpu))
}
