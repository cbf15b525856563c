package policy

import "testing"

// Every expectation the three normalisers this one replaced had (router's
// Host headers, config's handler hosts, the DNS shim's handler names), so
// that none of their callers sees a different host.
func TestOneNormaliserKeepsEveryCallersExpectations(t *testing.T) {
	tests := []struct{ from, in, want string }{
		{"router", "my.kv", "my.kv"},
		{"router", "MY.KV:8080", "my.kv"},
		{"router", "my.kv.", "my.kv"},
		{"router", "[::1]:80", "::1"},
		{"router", "", ""},
		{"router", "198.18.213.1", "198.18.213.1"},
		{"router", "[::ffff:192.0.2.3]", "192.0.2.3"},
		{"router", "[::FFFF:c000:203]:80", "192.0.2.3"},
		{"router", "::ffff:192.0.2.3", "192.0.2.3"},
		{"router", "[2001:DB8::1]", "2001:db8::1"},
		{"router", "my.kv..", "my.kv"},
		{"config", "MY.KV", "my.kv"},
		{"config", "my.kv:80", "my.kv"},
		{"config", " My.Kv ", "my.kv"},
		{"config", "*", "*"},
		{"dnsshim", "My.Kv.", "my.kv"},
		{"dnsshim", "api.example.com", "api.example.com"},
		{"admin", "My.KV", "my.kv"},
	}
	for _, tt := range tests {
		if got := NormalizeHost(tt.in); got != tt.want {
			t.Errorf("%s: NormalizeHost(%q) = %q, want %q", tt.from, tt.in, got, tt.want)
		}
	}
}
