package e2e

import (
	"regexp"
	"testing"
)

var digStatus = regexp.MustCompile(`status: ([A-Z]+)`)

func TestDeniedNamesAreRefusedWhenTheConfigSaysREFUSED(t *testing.T) {
	e := NewEnv(t, Options{DNS: "dns:\n  upstreams: [\"" + upstreamIP + ":53\"]\n  timeout: 1s\n  denied_rcode: REFUSED\n"})
	deny := e.CreateWith("deny", "--deny", "example.test", "--deny", "my.kv")
	off := e.CreateWith("off", "--internet", "off")
	tests := []struct {
		name   string
		sb     Sandbox
		args   []string
		status string // dig status
	}{
		{"a denied name", deny, []string{"example.test"}, "REFUSED"},
		{"a denied handler name (the shim's fast path)", deny, []string{"my.kv"}, "REFUSED"},
		{"a denied handler name over TCP", deny, []string{"+tcp", "my.kv"}, "REFUSED"},
		{"a name whose answer points only at a protected destination", deny, []string{"meta.good.test"}, "REFUSED"},
		{"a name off the internet with internet off", off, []string{"example.test"}, "REFUSED"},
		{"a name the policy allows is answered as ever", deny, []string{"other.test"}, "NOERROR"},
		{"a name the upstream does not know is still NXDOMAIN", deny, []string{"nope.test"}, "NXDOMAIN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"dig", "+time=2", "+tries=1", "@" + nowhereIP}, tt.args...)
			out := e.MustIn(tt.sb, args...)
			if got := digStatus.FindStringSubmatch(out); got == nil || got[1] != tt.status {
				t.Errorf("%v: got %v, want status %s:\n%s", tt.args, got, tt.status, out)
			}
		})
	}
}
