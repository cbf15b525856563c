// Package s3test runs a real S3 server for tests: SeaweedFS's weed binary
// (`weed server -s3`), on a loopback or test-namespace address, its data
// in the test's temporary directory. A test that needs it is skipped when
// the binary is absent; .ci/test builds it, so CI never skips.
package s3test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/interceptd/interceptd/netns"
)

// The test server's keys: a test server on a test address, nothing to
// protect.
const (
	AccessKey = "interceptd-test"
	SecretKey = "interceptd-test-secret"
)

// Binary is the weed binary: $INTERCEPTD_WEED, or weed on $PATH; "" when
// neither is there.
func Binary() string {
	if p := os.Getenv("INTERCEPTD_WEED"); p != "" {
		return p
	}
	p, _ := exec.LookPath("weed")
	return p
}

// Options place a server.
type Options struct {
	// IP is the address it announces and that Endpoint names; default
	// 127.0.0.1.
	IP string
	// Bind is the address it listens on; default IP. In a namespace of the
	// test's own, 0.0.0.0 serves every link of it.
	Bind string
	// Netns, when set, is the path of the network namespace the server
	// runs in (/run/netns/NAME), which Client reaches it in too.
	Netns string
	// Buckets are created once it is up.
	Buckets []string
	// Ports, in a namespace, are its listeners' (NamespacePorts picks
	// them for a test that must name the S3 port before the server
	// starts); zero: chosen by New.
	Ports Ports
}

// Ports are a server's eight listeners: master, volume, filer and S3, each
// followed by its gRPC port.
type Ports [8]int

// S3 is the S3 API's port.
func (p Ports) S3() int { return p[6] }

// Server is a running (or stopped) weed server.
type Server struct {
	o     Options
	dir   string
	ports Ports
	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
}

// Start starts a server and stops it when the test ends, or skips the test
// when there is no weed binary.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if Binary() == "" {
		t.Skip("no SeaweedFS weed binary (set $INTERCEPTD_WEED or put weed on $PATH; .ci/test builds it)")
	}
	s, err := New(t.TempDir(), o)
	if s != nil {
		t.Cleanup(s.Stop)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// New starts a server with its data in dir, for a TestMain that shares one
// among a package's tests (starting one takes seconds); the caller stops
// it. There must be a weed binary (Binary).
func New(dir string, o Options) (*Server, error) {
	if Binary() == "" {
		return nil, errors.New("no SeaweedFS weed binary")
	}
	if o.IP == "" {
		o.IP = "127.0.0.1"
	}
	if o.Bind == "" {
		o.Bind = o.IP
	}
	s := &Server{o: o, dir: dir}
	var err error
	if s.ports, err = o.Ports, nil; s.ports == (Ports{}) {
		s.ports, err = freePorts(o)
	}
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(s.dir, "s3.json"), s3Config(), 0o600); err != nil {
		return nil, err
	}
	if err := s.Restart(); err != nil {
		return s, err
	}
	for _, b := range o.Buckets {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := s.Client().MakeBucket(ctx, b, minio.MakeBucketOptions{})
		cancel()
		if err != nil {
			return s, fmt.Errorf("creating bucket %s: %w", b, err)
		}
		if err := s.warm(b); err != nil {
			return s, err
		}
	}
	return s, nil
}

// warm writes and deletes one object in bucket: SeaweedFS grows a bucket's
// first volumes on its first write, which can take longer than the
// request timeout a test gives its daemon, and a test should measure the
// store it configured, not that growth.
func (s *Server) warm(bucket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := s.Client()
	for {
		_, err := c.PutObject(ctx, bucket, ".warm", strings.NewReader("warm"), 4, minio.PutObjectOptions{})
		if err == nil {
			return c.RemoveObject(ctx, bucket, ".warm", minio.RemoveObjectOptions{})
		}
		if ctx.Err() != nil {
			return fmt.Errorf("warming bucket %s: %w", bucket, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func s3Config() []byte {
	b, _ := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "interceptd",
		"credentials": []any{map[string]string{"accessKey": AccessKey, "secretKey": SecretKey}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"},
	}}})
	return b
}

// freePorts picks ports for weed's listeners on o.IP. The listeners are
// probed and closed before weed binds them: on a test address nothing else
// takes them meanwhile, on loopback it is unlikely.
func freePorts(o Options) (Ports, error) {
	if o.Netns != "" {
		return NamespacePorts()
	}
	var ports Ports
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(o.IP, "0"))
		if err != nil {
			return ports, err
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// NamespacePorts picks ports for a server in a namespace of the test's own,
// where every port is free. But weed names a unix socket in /tmp after each
// gRPC port whatever namespace it runs in, so two servers in two namespaces
// on the same ports would take over (and at the end remove) each other's
// sockets: a base of its own choosing, one whose sockets no running server
// has.
func NamespacePorts() (Ports, error) {
	var ports Ports
	for range 100 {
		base := 18000 + 8*rand.IntN(1250)
		for i := range ports {
			ports[i] = base + i
		}
		if !socketsExist(ports) {
			return ports, nil
		}
	}
	return ports, fmt.Errorf("no free set of weed ports: 100 tries found their sockets in /tmp")
}

// Endpoint is the S3 endpoint, host:port.
func (s *Server) Endpoint() string { return net.JoinHostPort(s.o.IP, strconv.Itoa(s.ports[6])) }

// Port is the S3 port.
func (s *Server) Port() int { return s.ports[6] }

// Client is an S3 client of the server, which dials in its namespace.
func (s *Server) Client() *minio.Client {
	tr := &http.Transport{Proxy: nil}
	if s.o.Netns != "" {
		// A socket stays in the namespace it was made in: make it there.
		tr.DialContext = func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = netns.Do(s.o.Netns, func() error {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}
	}
	c, err := minio.New(s.Endpoint(), &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, ""), BucketLookup: minio.BucketLookupPath, Transport: tr})
	if err != nil {
		panic(err) // only for an endpoint that is not host:port, which Endpoint always is
	}
	return c
}

// Restart starts the server (again, on the same ports and data) and waits
// until it answers S3 requests.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	p := s.ports
	argv := []string{Binary(), "server",
		"-ip=" + s.o.IP, "-ip.bind=" + s.o.Bind, "-dir=" + s.dir,
		// Nothing leaves the test's addresses: no telemetry, no extra
		// gateways on fixed ports.
		"-master.telemetry=false",
		"-master.port=" + strconv.Itoa(p[0]), "-master.port.grpc=" + strconv.Itoa(p[1]),
		"-master.volumeSizeLimitMB=64",
		"-volume.port=" + strconv.Itoa(p[2]), "-volume.port.grpc=" + strconv.Itoa(p[3]), "-volume.max=0",
		"-filer", "-filer.port=" + strconv.Itoa(p[4]), "-filer.port.grpc=" + strconv.Itoa(p[5]),
		"-filer.localSocket=" + filepath.Join(s.dir, "filer.sock"),
		"-s3", "-s3.port=" + strconv.Itoa(p[6]), "-s3.port.grpc=" + strconv.Itoa(p[7]),
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.config=" + filepath.Join(s.dir, "s3.json"),
		"-s3.localSocket=" + filepath.Join(s.dir, "s3.sock"),
	}
	if s.o.Netns != "" {
		// nsenter switches the network namespace only.
		argv = append([]string{"nsenter", "--net=" + s.o.Netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	log, err := os.OpenFile(filepath.Join(s.dir, "weed.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting weed: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	// Up when a bucket listing answers: master, volume, filer and gateway
	// all started (the first start takes a few seconds).
	deadline := time.Now().Add(90 * time.Second)
	c := s.Client()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.ListBuckets(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("weed exited while starting (log: %s): %s", filepath.Join(s.dir, "weed.log"), tail(filepath.Join(s.dir, "weed.log")))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("weed did not answer S3 within 90s: %v; log: %s", err, tail(filepath.Join(s.dir, "weed.log")))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// Stop stops the server (its whole process group) and waits for it.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGCONT) // a frozen server would not hear SIGTERM
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.cmd = nil
	s.removeSockets()
}

// removeSockets removes the unix sockets weed makes for its gRPC ports in
// /tmp whatever -dir says (its command/server.go), so a test leaves
// nothing behind.
func (s *Server) removeSockets() {
	for _, p := range socketPaths(s.ports) {
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(p)
		}
	}
}

// socketPaths are the unix sockets weed makes for the gRPC ports of ports.
func socketPaths(ports Ports) []string {
	var ps []string
	for i, name := range []string{"master", "volume", "filer", "s3"} {
		ps = append(ps, fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", name, ports[2*i+1]))
	}
	return ps
}

// socketsExist says whether a server already has a socket of ports.
func socketsExist(ports Ports) bool {
	for _, p := range socketPaths(ports) {
		if _, err := os.Lstat(p); err == nil {
			return true
		}
	}
	return false
}

// Freeze stops the server's processes (SIGSTOP) without closing a socket:
// connections are accepted by the kernel and never answered, as from a
// store that hangs. Thaw resumes them.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		syscall.Kill(-s.cmd.Process.Pid, sig)
	}
}
