package tlsfront

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPassthrough passes connections through two fronts on loopback,
// one as served (the sandbox's direction copied by reads and writes for its
// first 64 KiB and spliced after, the upstream's copied all the way), one
// splicing both from the first byte, alternately: one connection through
// each per iteration, so that both see the same machine (a shared, busy
// one included). A connection is a handshake's exchange (the client's
// hello and 600 bytes, the upstream's 5000) or a 16 MiB download. The
// metrics are the process's CPU per connection through each (client and
// upstream included, the same for both; from getrusage around each
// connection) and their ratio.
//
//	go test ./router/tlsfront -run '^$' -bench Passthrough
func BenchmarkPassthrough(b *testing.B) {
	for _, size := range []struct {
		name string
		out  int
	}{{"handshake", 5000}, {"16MiB", 16 << 20}} {
		b.Run(size.name, func(b *testing.B) {
			hello := rawHello(b, "bench.test")
			fromClient := append(append([]byte(nil), hello...), make([]byte, 600)...)
			answer := make([]byte, size.out)
			up := upstreamSending(b, answer, false)
			copying, _, _ := frontCopying(b, &decider{}, up.ln.Addr().String(), 0, 0)
			splicing, _, _ := frontCopying(b, &decider{}, up.ln.Addr().String(), 0, -1)
			var cpu [2]time.Duration
			pass := func(addr string) time.Duration {
				cpu0 := cpuTime()
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				conn.Write(fromClient)
				conn.(*net.TCPConn).CloseWrite()
				n, err := io.Copy(io.Discard, conn)
				conn.Close()
				if err != nil || n != int64(size.out) {
					b.Fatalf("read %d bytes (%v), want %d", n, err, size.out)
				}
				<-up.result
				return cpuTime() - cpu0
			}
			b.ResetTimer()
			for i := range b.N {
				// Which goes first alternates too.
				if i%2 == 0 {
					cpu[0] += pass(copying)
					cpu[1] += pass(splicing)
				} else {
					cpu[1] += pass(splicing)
					cpu[0] += pass(copying)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpu[0].Microseconds())/float64(b.N), "cpu-µs/conn-copy-first")
			b.ReportMetric(float64(cpu[1].Microseconds())/float64(b.N), "cpu-µs/conn-splice")
			b.ReportMetric(float64(cpu[0])/float64(cpu[1]), "copy-first/splice")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
