package netns

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// nftIn runs an nft script in the network namespace ns (`ip netns exec`).
func nftIn(t *testing.T, ns, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nft %v: %v\n%s\n%s", args, err, out, script)
	}
	return string(out)
}

func TestTheDNSFloodLimitChangesInPlaceKeepingTheRestOfTheTable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is not installed")
	}
	b := make([]byte, 3)
	rand.Read(b)
	ns := "icdtest-dnsrate-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })

	p := RuleParams{InterfacePrefix: "icd", HTTPListenIP: "127.0.0.1", HTTPListenPort: 15380, Pool: "10.213.0.0/16", DNSQPS: 100}
	nftIn(t, ns, nftReplace(Rules(p).TProxy), "-f", "-")
	steps := []struct {
		name     string
		from, to int
		want     string // in the listed table; "" for no flood limit at all
	}{
		{"raised", 100, 5000, "limit rate over 5000/second burst 10000 packets"},
		{"lowered", 5000, 300, "limit rate over 300/second burst 600 packets"},
		{"removed", 300, 0, ""},
		{"added again", 0, 700, "limit rate over 700/second burst 1400 packets"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			q := p
			q.DNSQPS = st.to
			nftIn(t, ns, nftDNSRate(q, st.from), "-f", "-")
			table := nftIn(t, ns, "", "list", "table", "ip", NFTTable)
			if st.want == "" {
				if strings.Contains(table, "dnslimit") || strings.Contains(table, "dnsflood") {
					t.Errorf("the flood limit is still there:\n%s", table)
				}
			} else if !strings.Contains(table, st.want) || strings.Count(table, "limit rate over") != 1 {
				t.Errorf("want one flood rule with %q:\n%s", st.want, table)
			}
			// The rest of the table (interception, the flow counters) stays.
			if !strings.Contains(table, "tproxy to 127.0.0.1:15380") || !strings.Contains(table, "chain routed") {
				t.Errorf("the rest of the table went with the change:\n%s", table)
			}
		})
	}
}
