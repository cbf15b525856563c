package e2e

import (
	"strconv"
	"strings"
	"testing"
)

// The Host and SNI checks resolve a name the daemon's DNS never gave the
// sandbox (when the sandbox may resolve it itself). Those lookups are the
// sandbox's queries too: they come out of its DNS budget, so that a stream
// of connections naming fresh names cannot make the daemon ask its
// upstream resolvers faster than the sandbox's own queries may.
func TestHostsAndSNIsNamingFreshNamesSpendTheSandboxsDNSBudget(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.CreateWith("tight", "--max-dns-qps", "2")
	const n = 30
	for _, tt := range []struct{ name, zone, curl string }{
		{"SNIs on port 443", "sni.fresh.test", `curl -sk -m 3 -o /dev/null --resolve n$i.sni.fresh.test:443:` + otherIP + ` https://n$i.sni.fresh.test/`},
		{"Hosts on port 80", "host.fresh.test", `curl -s -m 3 -o /dev/null -H "Host: n$i.host.fresh.test" http://` + otherIP + `/`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.In(sb, "sh", "-c", "for i in $(seq 1 "+strconv.Itoa(n)+"); do "+tt.curl+" & done; wait")
			asked := 0
			for _, name := range e.Asked() {
				if strings.Contains(name, tt.zone) {
					asked++
				}
			}
			// A burst of twice the rate, and the rate for the second or
			// so the connections take: far fewer than n.
			t.Logf("%d connections naming fresh names, %d of the names asked upstream", n, asked)
			if asked > 12 {
				t.Errorf("%d connections made the daemon ask its resolvers %d names; the sandbox's budget is 2/s, bursts of 4", n, asked)
			}
		})
	}
}
