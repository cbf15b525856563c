package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
)

// What a container stored outlives its CNI DEL for the configured
// retention: purged at DEL with "0s", kept across a DEL and ADD of the same
// container id (podman restart) within the default hour.
func TestCNIDataRetentionPurgesAtDELOrKeepsItForAContainerReAddedInTime(t *testing.T) {
	c := newCNI(t)
	ctx := context.Background()
	conf := func(retention string) []byte {
		var extra string
		if retention != "" {
			extra = fmt.Sprintf(`,"dataRetention":%q`, retention)
		}
		return []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"interceptd","type":"interceptd-cni","socket":%q,"stateDir":%q%s}`,
			c.Socket, filepath.Join(c.dir, "state"), extra))
	}
	for _, tc := range []struct {
		name, retention string
		wantKept        bool
	}{
		{"dataRetention 0s purges at DEL", "0s", false},
		{"the default keeps it for a container re-added within the hour", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "ctr-" + randomID()
			nsName := "ie2ecni-" + id
			nsPath := c.runtimeNetns(nsName)
			os.MkdirAll("/etc/netns/"+nsName, 0o755)
			t.Cleanup(func() { os.RemoveAll("/etc/netns/" + nsName) })
			sb := Sandbox{Name: id, Netns: nsName, NetnsPath: nsPath}
			add := func() {
				t.Helper()
				if _, err := invoke.ExecPluginWithResult(ctx, c.plugin, conf(tc.retention), c.args("ADD", id, nsPath), nil); err != nil {
					t.Fatalf("ADD: %v", err)
				}
			}
			add()
			out, _, _ := c.CLI("sandbox", "show", id)
			gw := ""
			if _, rest, ok := strings.Cut(out, `"gateway": "`); ok {
				gw, _, _ = strings.Cut(rest, `"`)
			}
			os.WriteFile("/etc/netns/"+nsName+"/resolv.conf", []byte("nameserver "+gw+"\n"), 0o644)
			c.MustIn(sb, "curl", "-sS", "-f", "-X", "PUT", "--data", "mine", "http://state.do/k")

			if err := invoke.ExecPluginWithoutResult(ctx, c.plugin, conf(tc.retention), c.args("DEL", id, nsPath), nil); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			add() // the same container again (podman restart)
			// The status tells a purged key (404) from a sandbox that does
			// not answer at all.
			got, _ := c.In(sb, "curl", "-sS", "-w", " %{http_code}", "http://state.do/k")
			if tc.wantKept && got != "mine 200" || !tc.wantKept && !strings.HasSuffix(got, " 404") {
				t.Errorf("after DEL and ADD the container's state reads %q (want it kept: %v)", got, tc.wantKept)
			}
			if err := invoke.ExecPluginWithoutResult(ctx, c.plugin, conf("0s"), c.args("DEL", id, nsPath), nil); err != nil {
				t.Fatalf("the last DEL: %v", err)
			}
		})
	}
}
