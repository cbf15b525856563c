package main

// The stores mode (issue 22's speed figures, bench/README.md "Stores"):
// one daemon on bbolt and one with KV and state in etcd and blobs in S3
// (SeaweedFS), each in a host namespace of its own with one sandbox, the
// servers on that namespace's loopback, measured from inside the sandboxes
// in one run.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/internal/procstat"
	"github.com/interceptd/interceptd/store/s3store/s3test"
)

var storesMode = flag.Bool("stores", false, "measure the stores instead (issue 22): KV GET and PUT on a bbolt daemon beside an etcd one, and a -big-blob-mib blob through S3")

// storeDaemon is one daemon of the stores mode, in its own host namespace,
// with one sandbox.
type storeDaemon struct {
	name, hostNS, dir, sandboxNS string
	// spread are the namespaces of more sandboxes, for writers that
	// charge different owners.
	spread []string
	cmd    *exec.Cmd
	sb     admin.Client
}

func (d *storeDaemon) pid() int { return d.cmd.Process.Pid }

// The etcd member's addresses, on the loopback of the etcd daemon's host
// namespace, and the bucket of the S3 server there (bench/weed.go).
const (
	benchEtcdClient = "127.0.0.1:2379"
	benchEtcdPeer   = "127.0.0.1:2380"
	benchS3Bucket   = "interceptd-bench"
	// spreadSandboxes share the 32 writers of the spread PUT path (4
	// each): each sandbox's writes are charged to it, and the etcd
	// backend serialises one owner's writes on a host (lockOwners).
	spreadSandboxes = 8
)

// stores runs the stores mode and prints its figures.
func (b *bench) stores() {
	bb := make([]byte, 3)
	rand.Read(bb)
	b.id = hex.EncodeToString(bb)
	var err error
	b.dir, err = os.MkdirTemp("", "interceptd-bench-stores-")
	must(err)
	b.defer_(func() { os.RemoveAll(b.dir) })
	b.bin = filepath.Join(b.dir, "interceptd")
	if bin := os.Getenv("BENCH_DAEMON_BIN"); bin != "" {
		sh("cp", bin, b.bin)
	} else {
		sh("go", "build", "-o", b.bin, "./cmd/interceptd")
	}

	bolt := b.newStoreDaemon("bbolt", "b", "")
	etcdNS := "ibench-" + b.id + "-etcd"
	b.addNS(etcdNS)
	etcdPid := b.startEtcd(etcdNS)
	s3 := b.startWeed(etcdNS, filepath.Join(b.dir, "s3"), benchS3Bucket) // bench/weed.go
	keys := filepath.Join(b.dir, "keys")
	must(os.MkdirAll(keys, 0o700))
	must(os.WriteFile(filepath.Join(keys, "access"), []byte(s3test.AccessKey+"\n"), 0o600))
	must(os.WriteFile(filepath.Join(keys, "secret"), []byte(s3test.SecretKey+"\n"), 0o600))
	etcd := b.newStoreDaemon("etcd+S3", "e", fmt.Sprintf(`store:
  backend: etcd
  etcd:
    endpoints: ["http://%s"]
    prefix: /bench-%s/
    request_timeout: 5s
  blobs:
    backend: s3
    s3:
      endpoint: %s
      bucket: %s
      region: us-east-1
      prefix: bench/
      access_key_file: %s
      secret_key_file: %s
      insecure: true
      request_timeout: 30s
`, benchEtcdClient, b.id, s3, benchS3Bucket, filepath.Join(keys, "access"), filepath.Join(keys, "secret")))

	put := filepath.Join(b.dir, "put.lua")
	must(os.WriteFile(put, []byte(`wrk.method = "PUT"
wrk.body = string.rep("v", 128)
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/put-" .. (counter % 1000))
end
`), 0o644))
	daemons := []*storeDaemon{bolt, etcd}
	for _, d := range daemons {
		d.put("my.kv", "hot", bytes.Repeat([]byte("v"), 128))
		if out := sh("ip", "netns", "exec", d.sandboxNS, "curl", "-sS", "-f", "http://my.kv/hot"); out != strings.Repeat("v", 128) {
			must(fmt.Errorf("%s: the hot key from the sandbox reads %q", d.name, out))
		}
	}
	load0 := loadavg()

	// Interleaved rounds: bbolt first in even rounds, etcd first in odd
	// ones; each ratio is of two runs of the same round.
	type kind struct {
		name             string
		threads, conns   int
		extra            []string
		spread           bool // from the spread sandboxes at once, conns each
		rps, cpu, storeC [2][]float64
		p50, p99         [2][]float64
	}
	kinds := []*kind{
		{name: "KV GET hot key", threads: 2, conns: *conns, extra: nil},
		{name: "KV PUT, 1 writer", threads: 1, conns: 1, extra: []string{"-s", put}},
		{name: "KV PUT, 32 writers, one sandbox", threads: 2, conns: 32, extra: []string{"-s", put}},
		{name: "KV PUT, 32 writers, 8 sandboxes", threads: 1, conns: 32 / spreadSandboxes, extra: []string{"-s", put}, spread: true},
	}
	for r := 0; r < *rounds; r++ {
		fmt.Fprintf(os.Stderr, "stores round %d/%d\n", r+1, *rounds)
		for _, k := range kinds {
			for j := range daemons {
				i := j
				if r%2 == 1 {
					i = 1 - j
				}
				d := daemons[i]
				url := "http://my.kv/hot"
				if k.extra != nil {
					url = "http://my.kv/"
				}
				// The etcd daemon's store work is partly etcd's: its CPU
				// per request beside the daemon's.
				other := 0
				if i == 1 {
					other = etcdPid
				}
				nss := []string{d.sandboxNS}
				if k.spread {
					nss = d.spread
				}
				if *only != "" && strings.HasPrefix(k.name, *only) {
					go d.profile()
				}
				res := wrkLatency(nss, url, d.pid(), other, k.threads, k.conns, k.extra...)
				k.rps[i] = append(k.rps[i], res.rps)
				k.cpu[i] = append(k.cpu[i], res.cpu)
				k.storeC[i] = append(k.storeC[i], res.otherCPU)
				k.p50[i] = append(k.p50[i], res.p50)
				k.p99[i] = append(k.p99[i], res.p99)
			}
		}
	}

	fmt.Printf("\nstores (issue 22): %d rounds of %v each, bbolt and etcd alternately; etcd is ONE member on the daemon's namespace loopback (a speed figure, not a fault-tolerant one)\n", *rounds, *duration)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "path\tbackend\treq/s\tdaemon CPU µs/req\tetcd CPU µs/req\tp50 ms\tp99 ms\tetcd/bbolt req/s (rounds)\t\n")
	for _, k := range kinds {
		var rs []float64
		for r := range k.rps[0] {
			rs = append(rs, k.rps[1][r]/k.rps[0][r])
		}
		for i, d := range daemons {
			etcdCPU, ratio := "-", ""
			if i == 1 {
				etcdCPU = fmt.Sprintf("%.1f", median(k.storeC[i]))
				ratio = fmt.Sprintf("%.2f (%s)", median(rs), joinf(rs))
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f\t%s\t%.2f\t%.2f\t%s\t\n", k.name, d.name, median(k.rps[i]), median(k.cpu[i]), etcdCPU, median(k.p50[i]), median(k.p99[i]), ratio)
		}
	}
	tw.Flush()
	var get []float64
	for r := range kinds[0].rps[0] {
		get = append(get, kinds[0].rps[1][r]/kinds[0].rps[0][r])
	}
	fmt.Printf("KV GET hot key, etcd / bbolt: %.2f× (target ≥ 0.8×: %s)\n", median(get), metOrMissed(median(get) >= 0.8))
	fmt.Printf("load average (1, 5, 15 min): %s before the rounds, %s after\n", load0, loadavg())

	etcd.bigBlob()
	fmt.Printf("load average (1, 5, 15 min) after the blob: %s\n", loadavg())
}

func joinf(xs []float64) string {
	var each []string
	for _, x := range xs {
		each = append(each, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(each, " ")
}

func metOrMissed(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// addNS makes a namespace with loopback up, deleted at the end.
func (b *bench) addNS(ns string) {
	sh("ip", "netns", "add", ns)
	b.defer_(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh("ip", "-n", ns, "link", "set", "lo", "up")
}

// startEtcd runs one etcd member on the loopback of ns, its data in the
// benchmark's directory, and returns its pid once it has a leader.
func (b *bench) startEtcd(ns string) int {
	fmt.Fprintln(os.Stderr, "bench: starting etcd (one member)")
	data := filepath.Join(b.dir, "etcd")
	cmd := exec.Command("ip", "netns", "exec", ns, "etcd",
		"--name", "m0", "--data-dir", data,
		"--listen-client-urls", "http://"+benchEtcdClient, "--advertise-client-urls", "http://"+benchEtcdClient,
		"--listen-peer-urls", "http://"+benchEtcdPeer, "--initial-advertise-peer-urls", "http://"+benchEtcdPeer,
		"--initial-cluster", "m0=http://"+benchEtcdPeer, "--initial-cluster-state", "new",
		"--initial-cluster-token", "interceptd-bench", "--max-txn-ops", "1024",
		"--logger", "zap", "--log-level", "error")
	log, err := os.Create(filepath.Join(b.dir, "etcd.log"))
	must(err)
	cmd.Stdout, cmd.Stderr = log, log
	// Gone with the benchmark even if it is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(cmd.Start())
	log.Close()
	b.defer_(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		out, _ := exec.Command("ip", "netns", "exec", ns, "curl", "-sS", "-m", "1", "http://"+benchEtcdClient+"/health").Output()
		if strings.Contains(string(out), `"health":"true"`) {
			break
		}
		if i > 300 {
			raw, _ := os.ReadFile(filepath.Join(b.dir, "etcd.log"))
			must(fmt.Errorf("etcd does not answer its /health: %s\n%s", out, raw))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return cmd.Process.Pid // ip netns exec execs it
}

// newStoreDaemon starts a daemon with store (a config section, "" for the
// default, bbolt) in a host namespace of its own, waits for it, and makes
// its sandbox. tag tells its namespaces apart.
func (b *bench) newStoreDaemon(name, tag, store string) *storeDaemon {
	d := &storeDaemon{name: name, hostNS: "ibench-" + b.id + "-" + tag + "host", dir: filepath.Join(b.dir, tag)}
	if store != "" {
		// The etcd namespace is the daemon's own host namespace: etcd
		// and S3 are on its loopback.
		d.hostNS = "ibench-" + b.id + "-etcd"
	} else {
		b.addNS(d.hostNS)
	}
	must(os.MkdirAll(d.dir, 0o700))
	cfg, sock := filepath.Join(d.dir, "interceptd.yaml"), filepath.Join(d.dir, "admin.sock")
	// DNS upstream: the namespace's own loopback, where nothing answers;
	// the handlers' names are answered by the shim.
	must(os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 1
data_dir: %s
admin_socket: %s
listen: {pprof: true, max_requests_per_second_per_sandbox: 0}
dns: {upstreams: ["127.0.0.1:53"], max_qps_per_sandbox: 0}
sandbox: {netns_prefix: ibench%s%s-}
handlers:
  - {host: my.kv, kind: kv}
  - {host: my.r2, kind: blob}
  - {host: state.do, kind: state}
%s`, filepath.Join(d.dir, "data"), sock, b.id, tag, store)), 0o644))
	d.cmd, d.sb = b.serve(d.hostNS, cfg, sock, name+" ")
	sbx, err := d.sb.Create("bench", nil)
	must(err)
	d.sandboxNS = sbx.Netns
	for i := 0; i < spreadSandboxes; i++ {
		sbx, err := d.sb.Create(fmt.Sprintf("w%d", i), nil)
		must(err)
		d.spread = append(d.spread, sbx.Netns)
	}
	return d
}

// profile writes a CPU profile of the daemon for most of one run to
// daemon-<tag>.pprof (-only in the stores mode).
func (d *storeDaemon) profile() {
	time.Sleep(time.Second)
	out := "daemon-" + filepath.Base(d.dir) + ".pprof"
	exec.Command("ip", "netns", "exec", d.hostNS, "curl", "-sS", "-o", out,
		fmt.Sprintf("http://127.0.0.1:9780/debug/pprof/profile?seconds=%d", int(duration.Seconds())-2)).Run()
	fmt.Fprintf(os.Stderr, "bench: profile of the %s daemon in %s\n", d.name, out)
}

// put writes a key through the admin API's handler endpoint.
func (d *storeDaemon) put(host, key string, body []byte) {
	resp, err := d.sb.Handler(http.MethodPut, host, key, "", nil, bytes.NewReader(body), http.Header{"Content-Length": {strconv.Itoa(len(body))}})
	must(err)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		must(fmt.Errorf("%s: seeding %s/%s: %s", d.name, host, key, resp.Status))
	}
}

type wrkResult struct {
	rps, cpu, otherCPU, p50, p99 float64 // req/s, µs/req, µs/req, ms, ms
}

var latRE = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)

// wrkLatency runs wrk with threads and conns in each of nss at once, with
// its latency distribution, and returns the requests/s of all, the CPU µs
// per request of pid (and of other, when not 0), and the median and 99th
// percentile latency: with more than one namespace, the median of their
// medians and the highest of their 99th percentiles (wrk gives no
// distribution to merge).
func wrkLatency(nss []string, url string, pid, other, threads, conns int, extra ...string) wrkResult {
	cpu0, o0 := procCPU(pid), time.Duration(0)
	if other != 0 {
		o0 = procCPU(other)
	}
	outs := make([]string, len(nss))
	var wg sync.WaitGroup
	for i, ns := range nss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := append([]string{"netns", "exec", ns, "wrk", "--latency", "-t" + strconv.Itoa(threads), "-c" + strconv.Itoa(conns), "-d" + duration.String()}, extra...)
			outs[i] = sh("ip", append(args, url)...)
		}()
	}
	wg.Wait()
	cpu := procCPU(pid) - cpu0
	var ocpu time.Duration
	if other != 0 {
		ocpu = procCPU(other) - o0
	}
	var r wrkResult
	var total float64
	var p50s []float64
	for i, out := range outs {
		m, t := rpsRE.FindStringSubmatch(out), totalRE.FindStringSubmatch(out)
		if m == nil || t == nil {
			must(fmt.Errorf("wrk output:\n%s", out))
		}
		if strings.Contains(out, "Non-2xx") || strings.Contains(out, "Socket errors") {
			fmt.Fprintf(os.Stderr, "bench: %s in %s answered with errors:\n%s", url, nss[i], out)
		}
		rps, _ := strconv.ParseFloat(m[1], 64)
		n, _ := strconv.ParseFloat(t[1], 64)
		r.rps += rps
		total += n
		for _, l := range latRE.FindAllStringSubmatch(out, -1) {
			v, _ := strconv.ParseFloat(l[2], 64)
			switch l[3] {
			case "us":
				v /= 1000
			case "s":
				v *= 1000
			}
			if l[1] == "50" {
				p50s = append(p50s, v)
			} else {
				r.p99 = max(r.p99, v)
			}
		}
	}
	total = max(total, 1)
	r.cpu = float64(cpu.Microseconds()) / total
	r.otherCPU = float64(ocpu.Microseconds()) / total
	r.p50 = median(p50s)
	return r
}

// bigBlob uploads and downloads a -big-blob-mib blob through the blob
// handler from the sandbox, with the daemon's RSS growth (VmRSS polled,
// and its anonymous part) during each and its CPU per MiB.
func (d *storeDaemon) bigBlob() {
	path := filepath.Join(d.dir, "big")
	f, err := os.Create(path)
	must(err)
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	for i := 0; i < *bigMiB; i++ {
		buf[0], buf[1] = byte(i), byte(i>>8) // no two MiB alike
		f.Write(buf)
	}
	must(f.Close())
	defer os.Remove(path)
	size := int64(*bigMiB) << 20
	mb := float64(size) / 1e6
	// Settle first: the rounds' garbage should not count as the blob's.
	time.Sleep(2 * time.Second)
	fmt.Printf("\nblob of %d MiB through the blob handler, S3 (SeaweedFS, same machine and disk) behind the %s daemon:\n", *bigMiB, d.name)
	base, _, _ := procstat.RSS(d.pid())
	for _, dir := range []string{"PUT", "GET"} {
		t0, a0, _ := procstat.RSS(d.pid())
		cpu0 := procCPU(d.pid())
		stop := procstat.Peak(d.pid(), 10*time.Millisecond)
		start := time.Now()
		var out string
		if dir == "PUT" {
			out = sh("ip", "netns", "exec", d.sandboxNS, "curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_upload}", "-T", path, "http://my.r2/big")
		} else {
			out = sh("ip", "netns", "exec", d.sandboxNS, "curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}", "http://my.r2/big")
		}
		took := time.Since(start)
		pt, pa := stop()
		cpu := procCPU(d.pid()) - cpu0
		if n, _ := strconv.ParseInt(strings.TrimSpace(out), 10, 64); n != size {
			must(fmt.Errorf("blob %s moved %s bytes, not %d", dir, out, size))
		}
		growth := float64(pt-t0) / (1 << 20)
		// Growth over this transfer's start, and its peak over the
		// daemon's RSS before the upload (what the upload left resident
		// counts against the download there).
		fmt.Printf("  %s: %.1f s, %.0f MB/s, daemon CPU %.2f ms/MiB; daemon RSS growth %.1f MiB (anonymous %.1f MiB; from %.1f MiB; peak %.1f MiB over the RSS before the upload) (target ≤ 32 MiB: %s)\n",
			dir, took.Seconds(), mb/took.Seconds(), float64(cpu.Microseconds())/1000/float64(*bigMiB),
			growth, float64(pa-a0)/(1<<20), float64(t0)/(1<<20), float64(pt-base)/(1<<20), metOrMissed(growth <= 32))
	}
}
