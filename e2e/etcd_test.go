package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
)

// etcdRequestTimeout is the daemons' store.etcd.request_timeout here.
const etcdRequestTimeout = 2 * time.Second

// twoHostsOnEtcd starts a three-member etcd cluster in a namespace of its
// own and two daemons, each in its own host namespace, with KV and state in
// that cluster. The members listen on 203.0.113.1-3 (on the etcd
// namespace's loopback); each host namespace reaches them through a veth
// of its own (198.51.100.0/30 for the first host, .4/30 for the second)
// and a route. No address outside these namespaces is ever used.
func twoHostsOnEtcd(t *testing.T) (a, b *Env, cluster *etcdtest.Cluster) {
	t.Helper()
	requireRoot(t)
	etcdtest.Binary(t)
	ns := "ie2e-" + randomID() + "-etcd"
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	var specs []etcdtest.MemberSpec
	var endpoints []string
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("203.0.113.%d", i)
		run(t, "ip", "-n", ns, "addr", "add", ip+"/32", "dev", "lo")
		specs = append(specs, etcdtest.MemberSpec{Client: ip + ":2379", Peer: ip + ":2380", Netns: ns})
		endpoints = append(endpoints, fmt.Sprintf("%q", "http://"+ip+":2379"))
	}
	extra := fmt.Sprintf("store:\n  backend: etcd\n  etcd:\n    endpoints: [%s]\n    prefix: /e2e-%s/\n    request_timeout: %s\n",
		strings.Join(endpoints, ", "), randomID(), etcdRequestTimeout)
	a = NewEnv(t, Options{ExtraConfig: extra, NoStart: true})
	b = NewEnv(t, Options{ExtraConfig: extra, NoStart: true})
	for i, e := range []*Env{a, b} {
		host, peer := fmt.Sprintf("198.51.100.%d", 4*i+1), fmt.Sprintf("198.51.100.%d", 4*i+2)
		link := fmt.Sprintf("h%d", i)
		run(t, "ip", "-n", e.HostNS, "link", "add", "etcd0", "type", "veth", "peer", "name", link, "netns", ns)
		run(t, "ip", "-n", e.HostNS, "addr", "add", host+"/30", "dev", "etcd0")
		run(t, "ip", "-n", e.HostNS, "link", "set", "etcd0", "up")
		run(t, "ip", "-n", ns, "addr", "add", peer+"/30", "dev", link)
		run(t, "ip", "-n", ns, "link", "set", link, "up")
		run(t, "ip", "-n", e.HostNS, "route", "add", "203.0.113.0/24", "via", peer)
	}
	// After the Envs: cleanups run last-in first-out, so the members die
	// before the daemons stop and the namespaces go.
	cluster = etcdtest.StartCluster(t, specs)
	a.Start()
	b.Start()
	return a, b, cluster
}

// curlOut runs curl in a sandbox and returns its output and status code
// ("000" when no answer came).
func curlOut(e *Env, sb Sandbox, args ...string) (body, code string) {
	e.t.Helper()
	out, _ := e.In(sb, append([]string{"curl", "-sS", "-m", "15", "-w", "\n%{http_code}"}, args...)...)
	i := strings.LastIndex(out, "\n")
	return out[:max(i, 0)], out[i+1:]
}

// readUntil reads url in sb until it answers want (a status and the body,
// or for a status other than 200 a part of it) and returns how long that
// took after since, or fails after 3s.
func readUntil(t *testing.T, e *Env, sb Sandbox, url, want string, since time.Time) (time.Duration, int) {
	t.Helper()
	wantCode, wantBody, _ := strings.Cut(want, " ")
	for reads := 1; ; reads++ {
		body, code := curlOut(e, sb, url)
		if code == wantCode && (body == wantBody || (code != "200" && strings.Contains(body, wantBody))) {
			return time.Since(since), reads
		}
		if time.Since(since) > 3*time.Second {
			t.Fatalf("%s in %s answers %s %q 3s after the write, want %q", url, sb.Name, code, body, want)
		}
	}
}

func TestTwoHostsShareKVAndStateThroughEtcdAndTheSecondHostsCacheSeesTheFirstsChanges(t *testing.T) {
	a, b, _ := twoHostsOnEtcd(t)
	// The same sandbox name on both hosts: a container rescheduled from
	// one host to the other finds its state.
	sa, sb := a.Create("agent"), b.Create("agent")

	if _, code := curlOut(a, sa, "-X", "PUT", "--data", "from-a", "http://my.kv/shared"); code != "204" {
		t.Fatalf("kv put on the first host: %s", code)
	}
	if body, code := curlOut(b, sb, "http://my.kv/shared"); code != "200" || body != "from-a" {
		t.Fatalf("the second host reads %s %q, want 200 from-a", code, body)
	}

	if _, code := curlOut(a, sa, "-X", "PUT", "--data", "1", "http://state.do/counter"); code != "204" {
		t.Fatalf("state put: %s", code)
	}
	txn := `{"conditions": [{"key": "counter", "value": "1"}, {"key": "lock", "absent": true}],
  "reads": ["counter"], "writes": [{"key": "counter", "value": "2"}, {"key": "lock", "value": "host-a"}]}`
	if body, code := curlOut(a, sa, "-X", "POST", "--data", txn, "http://state.do/"); code != "200" || !strings.Contains(body, `"value": "1"`) {
		t.Fatalf("state transaction on the first host: %s %s", code, body)
	}
	for key, want := range map[string]string{"counter": "2", "lock": "host-a"} {
		if body, code := curlOut(b, sb, "http://state.do/"+key); code != "200" || body != want {
			t.Errorf("the second host's sandbox reads state %s as %s %q, want %q", key, code, body, want)
		}
	}
	// The same transaction again from the second host fails its condition
	// on what the first wrote: one store, not two.
	if body, code := curlOut(b, sb, "-X", "POST", "--data", txn, "http://state.do/"); code != "409" {
		t.Errorf("the transaction replayed on the second host: %s %s, want 409", code, body)
	}

	// The second host's cache holds the key now (read twice); the first
	// host's overwrite and delete must reach it.
	curlOut(b, sb, "http://my.kv/shared")
	start := time.Now()
	if _, code := curlOut(a, sa, "-X", "PUT", "--data", "again", "http://my.kv/shared"); code != "204" {
		t.Fatalf("overwrite: %s", code)
	}
	took, reads := readUntil(t, b, sb, "http://my.kv/shared", "200 again", start)
	t.Logf("the overwrite was read on the second host %v after the first host's write began (%d reads)", took, reads)
	curlOut(b, sb, "http://my.kv/shared")
	start = time.Now()
	if _, code := curlOut(a, sa, "-X", "DELETE", "http://my.kv/shared"); code != "204" {
		t.Fatalf("delete: %s", code)
	}
	took, reads = readUntil(t, b, sb, "http://my.kv/shared", "404 key not found", start)
	t.Logf("the delete was seen on the second host %v after the first host's delete began (%d reads)", took, reads)

	// A value over etcd's request limit is refused naming the limit.
	out := a.MustIn(sa, "sh", "-c", `head -c 1600000 /dev/zero | curl -sS -m 15 -w '\n%{http_code}' -X PUT --data-binary @- http://my.kv/big`)
	if !strings.HasSuffix(out, "\n413") || !strings.Contains(out, "limit 1507328") {
		t.Errorf("a 1.6 MB value: %q, want 413 naming the limit", out)
	}
	if !strings.Contains(out, "--max-request-bytes") {
		t.Errorf("a 1.6 MB value: %q does not say the limit follows the etcd servers' --max-request-bytes", out)
	}

	m := b.Scrape()
	// The second host's usage series and status hold the state the first
	// host's sandbox wrote: the figures are etcd's, the fleet's.
	if v, _ := sample(m, `interceptd_store_usage_bytes{kind="state",sandbox="agent"}`); v == 0 {
		t.Errorf("the second host reports no state usage for agent, whose state the first host wrote: the bbolt file's figures?")
	}
	if v, ok := sample(m, `interceptd_store_usage_engine{engine="etcd",kind="state"}`); !ok || v != 1 {
		t.Errorf("interceptd_store_usage_engine for state from etcd: %v %v, want 1", v, ok)
	}
	if out, _, code := b.CLI("status"); code != 0 || !strings.Contains(out, "(etcd, fleet-wide)") || strings.Contains(out, "state 0.0 MiB in 0 keys") {
		t.Errorf("status on the second host (exit %d) does not report the fleet's state usage from etcd:\n%s", code, out)
	}
	if v, _ := sample(m, `interceptd_store_etcd_cache_reads_total{result="hit"}`); v == 0 {
		t.Errorf("the second host's cache served no read: the test proved nothing about it")
	}
	if v, _ := sample(m, "interceptd_store_etcd_watch_up"); v != 1 {
		t.Errorf("interceptd_store_etcd_watch_up is %v on the second host", v)
	}
	if out, errOut, code := a.CLI("store", "--check"); code != 0 {
		t.Errorf("interceptd store --check: exit %d: %s %s", code, out, errOut)
	}
}

func TestEtcdLosingAMemberLosesNoAcknowledgedWriteAndLosingAllAnswers503UntilItReturns(t *testing.T) {
	a, b, cluster := twoHostsOnEtcd(t)
	sa, sb := a.Create("agent"), b.Create("agent")
	deny := a.CreateWith("deny", "--deny", "example.test")

	// Writers in the first host's sandbox; the leader dies while they run.
	const writers, each = 4, 40
	outs := make([]string, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			script := fmt.Sprintf(`for i in $(seq 1 %d); do printf 'w%d-%%s %%s\n' $i $(curl -s -o /dev/null -m 10 -w '%%{http_code}' -X PUT --data w%d-$i http://my.kv/w%d-$i); done`, each, w, w, w)
			outs[w], _ = a.In(sa, "sh", "-c", script)
		}()
	}
	time.Sleep(time.Second)
	leader := cluster.Leader(t)
	leader.Kill()
	t.Logf("killed the leader, %s", leader.Name)
	wg.Wait()
	acked := map[string]bool{}
	failed := 0
	for _, out := range outs {
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			key, code, _ := strings.Cut(line, " ")
			switch code {
			case "204":
				acked[key] = true
			case "503":
				failed++
			default:
				t.Errorf("a write answered %q", line)
			}
		}
	}
	t.Logf("%d writes acknowledged, %d answered 503 around the leader's death", len(acked), failed)
	if len(acked) < writers*each/2 {
		t.Errorf("only %d of %d writes acknowledged with two of three members up", len(acked), writers*each)
	}
	// Every acknowledged write, read from the other host.
	var keys []string
	for k := range acked {
		keys = append(keys, k)
	}
	script := `for k in "$@"; do printf '%s=%s\n' $k "$(curl -s -m 10 http://my.kv/$k)"; done`
	out, _ := b.In(sb, append([]string{"sh", "-c", script, "sh"}, keys...)...)
	got := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		if acked[k] && v == k {
			got[k] = true
		}
	}
	if len(got) != len(acked) {
		t.Errorf("%d acknowledged writes read back, %d acknowledged:\n%s", len(got), len(acked), out)
	}

	// Every member down.
	for _, m := range cluster.Members {
		m.Kill()
	}
	t.Run("writes answer 503 store_unavailable within the timeout", func(t *testing.T) {
		start := time.Now()
		body, code := curlOut(a, sa, "-X", "PUT", "--data", "x", "http://my.kv/during")
		took := time.Since(start)
		t.Logf("the write was answered %s after %v (request_timeout %v)", code, took, etcdRequestTimeout)
		if code != "503" || !strings.Contains(body, "store_unavailable") {
			t.Errorf("got %s %q", code, body)
		}
		// A commit makes at most two requests, each bounded; curl and the
		// namespace switch add little.
		if limit := 2*etcdRequestTimeout + 2*time.Second; took > limit {
			t.Errorf("the answer took %v, over %v", took, limit)
		}
	})
	t.Run("reads the cache cannot serve answer 503 too", func(t *testing.T) {
		if body, code := curlOut(b, sb, "http://my.kv/never-read-here"); code != "503" || !strings.Contains(body, "store_unavailable") {
			t.Errorf("got %s %q", code, body)
		}
		if body, code := curlOut(b, sb, "http://state.do/anything"); code != "503" {
			t.Errorf("state: got %s %q", code, body)
		}
	})
	t.Run("interceptd store --check says etcd is unavailable", func(t *testing.T) {
		if out, errOut, code := a.CLI("store", "--check"); code == 0 || !strings.Contains(out+errOut, "store_unavailable") {
			t.Errorf("exit %d: %s %s", code, out, errOut)
		}
	})
	t.Run("interceptd status says kv and state usage are unavailable, within the request timeout", func(t *testing.T) {
		start := time.Now()
		out, errOut, code := a.CLI("status")
		took := time.Since(start)
		if code != 0 || !strings.Contains(out, "kv unavailable (etcd)") || !strings.Contains(out, "state unavailable (etcd)") ||
			!strings.Contains(out, "store_unavailable") || strings.Contains(out, "kv 0.0 MiB") {
			t.Errorf("exit %d: %s %s", code, out, errOut)
		}
		if limit := etcdRequestTimeout + 2*time.Second; took > limit {
			t.Errorf("status took %v, over %v", took, limit)
		}
	})
	t.Run("interceptd sandbox show shows the sandbox with its kv and state usage marked unavailable and exits 0", func(t *testing.T) {
		start := time.Now()
		out, errOut, code := a.CLI("sandbox", "show", "agent")
		took := time.Since(start)
		if code != 0 || !strings.Contains(out, `"name": "agent"`) || !strings.Contains(out, `"addr": "`+sa.Addr) ||
			!strings.Contains(out, `"unavailable"`) || !strings.Contains(out, "store_unavailable") {
			t.Errorf("exit %d:\n%s\n%s", code, out, errOut)
		}
		if !strings.Contains(errOut, "kv and state usage and quotas unavailable") {
			t.Errorf("no note on stderr: %q", errOut)
		}
		if limit := etcdRequestTimeout + 2*time.Second; took > limit {
			t.Errorf("sandbox show took %v, over %v", took, limit)
		}
	})
	t.Run("the usage series of kv and state go, and the engine series says etcd cannot be read", func(t *testing.T) {
		// Within the usage cache's refresh of what was read before.
		deadline := time.Now().Add(20 * time.Second)
		for {
			m := a.Scrape()
			v, ok := sample(m, `interceptd_store_usage_engine{engine="etcd",kind="kv"}`)
			if ok && v == 0 {
				if strings.Contains(m, `interceptd_store_usage_bytes{kind="kv"`) {
					t.Errorf("kv usage series reported while etcd cannot be read")
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("interceptd_store_usage_engine{engine=etcd,kind=kv} is %v %v 20s into the outage", v, ok)
			}
			time.Sleep(time.Second)
		}
	})
	t.Run("a sandbox is created and intercepted while etcd is down", func(t *testing.T) {
		// The sandbox is what create printed.
		out, errOut, code := a.CLI("sandbox", "create", "late")
		if code != 0 {
			t.Fatalf("sandbox create with etcd down: exit %d: %s", code, errOut)
		}
		late := Sandbox{Name: "late", Netns: a.Prefix + "late", NetnsPath: strings.TrimSpace(out)}
		if got := a.MustIn(late, "dig", "+short", "+time=2", "+tries=1", "@"+nowhereIP, "my.kv"); got != virtualKV+"\n" {
			t.Errorf("DNS in the new sandbox: %q", got)
		}
	})
	t.Run("DNS, interception and the policy keep working", func(t *testing.T) {
		if got := a.MustIn(sa, "dig", "+short", "+time=2", "+tries=1", "@"+nowhereIP, "my.kv"); got != virtualKV+"\n" {
			t.Errorf("DNS: %q", got)
		}
		if body, code := curlOut(a, sa, "http://"+upstreamIP+"/"); code != "200" || !strings.Contains(body, `"Host"`) {
			t.Errorf("intercepted HTTP to the upstream: %s %q", code, body)
		}
		if body, code := curlOut(a, deny, "-H", "Host: example.test", "http://"+upstreamIP+"/"); code != "403" || !strings.Contains(body, "denied (denied_host)") {
			t.Errorf("a denied host: %s %q", code, body)
		}
	})

	// etcd returns; the daemons were never restarted.
	for _, m := range cluster.Members {
		m.Start()
	}
	cluster.Wait(t, 30*time.Second)
	start := time.Now()
	for {
		_, code := curlOut(a, sa, "-X", "PUT", "--data", "back", "http://my.kv/after")
		if code == "204" {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("20s after etcd returned a write still answers %s", code)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("writes work again %v after every member answered", time.Since(start).Round(time.Millisecond))
	readUntil(t, b, sb, "http://my.kv/after", "200 back", time.Now())
	// The second host's watch is current again: the first's overwrite
	// reaches its cache.
	curlOut(b, sb, "http://my.kv/after")
	start = time.Now()
	if _, code := curlOut(a, sa, "-X", "PUT", "--data", "again", "http://my.kv/after"); code != "204" {
		t.Fatalf("overwrite after the outage: %s", code)
	}
	readUntil(t, b, sb, "http://my.kv/after", "200 again", start)
	m := b.Scrape()
	if v, _ := sample(m, `interceptd_store_etcd_requests_total{op="get",outcome="unavailable"}`); v == 0 {
		t.Errorf("no unavailable get counted on the second host")
	}
	if v, _ := sample(m, "interceptd_store_etcd_watch_up"); v != 1 {
		t.Errorf("interceptd_store_etcd_watch_up is %v after etcd returned", v)
	}
}
