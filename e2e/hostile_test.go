package e2e

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// dialFrom connects to dest from inside sb, as a process there would.
func (e *Env) dialFrom(sb Sandbox, dest string) net.Conn {
	e.t.Helper()
	var c net.Conn
	err := inNetns(sb.NetnsPath, func() (err error) {
		c, err = net.DialTimeout("tcp4", dest, 5*time.Second)
		return err
	})
	if err != nil {
		e.t.Fatalf("dialing %s from %s: %v", dest, sb.Name, err)
	}
	return c
}

// raw sends bytes on a fresh connection from inside a sandbox and returns
// the response's status line (or "" when the daemon just closed).
func (e *Env) raw(sb Sandbox, dest string, req string) string {
	e.t.Helper()
	c := e.dialFrom(sb, dest)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte(req))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

func TestHostileRequestsGetACleanClientErrorAndStoreNothing(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("hostile")
	kv := virtualKV + ":80"
	tests := []struct {
		name string
		req  string
		want string // status line prefix
	}{
		{"two different Content-Lengths", "PUT /smuggled HTTP/1.1\r\nHost: my.kv\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", "HTTP/1.1 400"},
		{"Content-Length and Transfer-Encoding together", "PUT /framed HTTP/1.1\r\nHost: my.kv\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 400"},
		{"headers over 64 KiB", "GET /k HTTP/1.1\r\nHost: my.kv\r\nX-Big: " + strings.Repeat("a", 80<<10) + "\r\n\r\n", "HTTP/1.1 431"},
		// To a handler's virtual address the handler answers, whatever the Host.
		{"a huge Host", "GET /k HTTP/1.1\r\nHost: " + strings.Repeat("h", 8000) + ".example\r\n\r\n", "HTTP/1.1 404"},
		{"invalid percent-encoding", "GET /%zz HTTP/1.1\r\nHost: my.kv\r\n\r\n", "HTTP/1.1 400"},
		{"a request line of garbage", "\x00\x01\x02 nonsense\r\n\r\n", "HTTP/1.1 400"},
		{"a Host with a space", "GET /k HTTP/1.1\r\nHost: my kv\r\n\r\n", "HTTP/1.1 400"},
		{"a bare LF chunked body cut short", "PUT /cut HTTP/1.1\r\nHost: my.kv\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "HTTP/1.1 400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := e.raw(sb, kv, tt.req); !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want %s…", got, tt.want)
			}
		})
	}
	// The same shape on its way to be forwarded is refused too, not passed on.
	if got := e.raw(sb, upstreamIP+":80", "POST / HTTP/1.1\r\nHost: "+upstreamIP+"\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("forwarding Content-Length with Transfer-Encoding: got %q", got)
	}
	for _, key := range []string{"smuggled", "framed", "cut"} {
		if got := e.MustIn(sb, "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://my.kv/"+key); got != "404" {
			t.Errorf("key %q exists after a hostile request: %s", key, got)
		}
	}
	// The daemon is unharmed and serves everyone.
	e.MustIn(sb, "curl", "-sS", "-f", "-X", "PUT", "--data", "fine", "http://my.kv/after")
	if got := e.MustIn(e.Create("bystander"), "curl", "-sS", "http://my.kv/after"); got != "fine" {
		t.Errorf("after the hostile requests: %q", got)
	}
}
