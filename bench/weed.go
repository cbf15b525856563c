package main

import (
	"fmt"
	"os"

	"github.com/interceptd/interceptd/store/s3store/s3test"
)

// startWeed runs SeaweedFS (`weed server -s3`, through store/s3store/s3test)
// on the loopback of ns with its data in dir, makes bucket (warmed, so that
// SeaweedFS's first volume is not grown by the benchmark's first write), and
// returns the S3 endpoint; the server and its sockets go at the end. In a
// namespace s3test picks ports whose /tmp sockets no running server has, so
// a benchmark beside a test's server keeps clear of it.
func (b *bench) startWeed(ns, dir, bucket string) string {
	fmt.Fprintln(os.Stderr, "bench: starting SeaweedFS (weed server -s3)")
	if s3test.Binary() == "" {
		must(fmt.Errorf("no SeaweedFS weed binary (set $INTERCEPTD_WEED or put weed on $PATH)"))
	}
	must(os.MkdirAll(dir, 0o700))
	srv, err := s3test.New(dir, s3test.Options{IP: "127.0.0.1", Netns: "/run/netns/" + ns, Buckets: []string{bucket}})
	if srv != nil {
		b.defer_(srv.Stop)
	}
	must(err)
	return srv.Endpoint()
}
