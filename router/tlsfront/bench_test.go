package tlsfront

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPassthrough passes connections through the front on loopback,
// the first bytes copied by reads and writes (as served) against spliced
// from the first byte: a connection with a handshake's exchange (the
// client's hello and 600 bytes, the upstream's 5000 bytes), and a 16 MiB
// download. cpu-µs/op is the whole process's CPU (client and upstream
// included, the same for both), from getrusage.
//
//	go test ./router/tlsfront -run '^$' -bench Passthrough -count 5
func BenchmarkPassthrough(b *testing.B) {
	for _, size := range []struct {
		name string
		out  int
	}{{"handshake", 5000}, {"16MiB", 16 << 20}} {
		for _, mode := range []struct {
			name  string
			first int64
		}{{"copy first", 0}, {"splice only", -1}} {
			b.Run(size.name+"/"+mode.name, func(b *testing.B) {
				hello := rawHello(b, "bench.test")
				fromClient := append(append([]byte(nil), hello...), make([]byte, 600)...)
				answer := make([]byte, size.out)
				up := upstreamSending(b, answer, false)
				addr, _, _ := frontCopying(b, &decider{}, up.ln.Addr().String(), 0, mode.first)
				cpu0 := cpuTime()
				b.ResetTimer()
				for range b.N {
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
				}
				b.StopTimer()
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			})
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
