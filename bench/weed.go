package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/interceptd/interceptd/store/s3store/s3test"
)

// startWeed runs SeaweedFS (`weed server -s3`, as store/s3store/s3test
// does) on the loopback of ns with its data in dir, makes bucket, and
// returns the S3 endpoint; the server and its sockets go at the end.
//
// Not s3test.New: in a namespace it uses fixed ports, and weed names unix
// sockets in /tmp after its gRPC ports (/tmp/seaweedfs-master-grpc-18001.sock)
// whatever namespace it runs in, so a benchmark beside a test's server
// would take over that server's sockets (and remove them at its end).
// Ports from the run's id keep the two apart.
func (b *bench) startWeed(ns, dir, bucket string) string {
	fmt.Fprintln(os.Stderr, "bench: starting SeaweedFS (weed server -s3)")
	weed := s3test.Binary()
	if weed == "" {
		must(fmt.Errorf("no SeaweedFS weed binary (set $INTERCEPTD_WEED or put weed on $PATH)"))
	}
	must(os.MkdirAll(dir, 0o700))
	cfg, _ := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "interceptd",
		"credentials": []any{map[string]string{"accessKey": s3test.AccessKey, "secretKey": s3test.SecretKey}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"},
	}}})
	must(os.WriteFile(filepath.Join(dir, "s3.json"), cfg, 0o600))
	n, _ := strconv.ParseUint(b.id, 16, 32)
	base := 20000 + int(n%2000)*10
	var p [8]int
	for i := range p {
		p[i] = base + i
	}
	argv := []string{"nsenter", "--net=/run/netns/" + ns, weed, "server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=" + dir,
		// Nothing leaves the namespace: no telemetry, no extra gateways.
		"-master.telemetry=false",
		"-master.port=" + strconv.Itoa(p[0]), "-master.port.grpc=" + strconv.Itoa(p[1]),
		"-master.volumeSizeLimitMB=64",
		"-volume.port=" + strconv.Itoa(p[2]), "-volume.port.grpc=" + strconv.Itoa(p[3]), "-volume.max=0",
		"-filer", "-filer.port=" + strconv.Itoa(p[4]), "-filer.port.grpc=" + strconv.Itoa(p[5]),
		"-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
		"-s3", "-s3.port=" + strconv.Itoa(p[6]), "-s3.port.grpc=" + strconv.Itoa(p[7]),
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.config=" + filepath.Join(dir, "s3.json"),
		"-s3.localSocket=" + filepath.Join(dir, "s3.sock"),
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	log, err := os.Create(filepath.Join(dir, "weed.log"))
	must(err)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, stopped as one; killed with the benchmark
	// if that is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	must(cmd.Start())
	log.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.defer_(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		for i, name := range []string{"master", "volume", "filer", "s3"} {
			sock := fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", name, p[2*i+1])
			if fi, err := os.Lstat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
				os.Remove(sock)
			}
		}
	})

	endpoint := net.JoinHostPort("127.0.0.1", strconv.Itoa(p[6]))
	tr := &http.Transport{Proxy: nil, DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		// A socket stays in the namespace it was made in.
		err = inNetns("/run/netns/"+ns, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	c, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(s3test.AccessKey, s3test.SecretKey, ""), BucketLookup: minio.BucketLookupPath, Transport: tr})
	must(err)
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.ListBuckets(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-done:
			raw, _ := os.ReadFile(filepath.Join(dir, "weed.log"))
			must(fmt.Errorf("weed exited while starting: %s", tail(raw)))
		default:
		}
		if time.Now().After(deadline) {
			must(fmt.Errorf("weed did not answer S3 within 90s: %v", err))
		}
		time.Sleep(200 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	must(c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}))
	// Warm the bucket (as s3test does): SeaweedFS grows its first volumes
	// on the first write, which should not be the benchmark's.
	for {
		_, err := c.PutObject(ctx, bucket, ".warm", strings.NewReader("warm"), 4, minio.PutObjectOptions{})
		if err == nil {
			must(c.RemoveObject(ctx, bucket, ".warm", minio.RemoveObjectOptions{}))
			return endpoint
		}
		if ctx.Err() != nil {
			must(fmt.Errorf("warming bucket %s: %w", bucket, err))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(b []byte) string {
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}
