package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestEachForwardingFailureIsNamedByItsKind(t *testing.T) {
	op := func(err error) error {
		return &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", err)}
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"a reset connection (as a raw write to one fails)", op(syscall.ECONNRESET), "reset"},
		{"a broken pipe is a reset too", op(syscall.EPIPE), "reset"},
		{"a refused connection", op(syscall.ECONNREFUSED), "refused"},
		{"no route to the host", op(syscall.EHOSTUNREACH), "unreachable"},
		{"no route to the network", op(syscall.ENETUNREACH), "unreachable"},
		{"a deadline passed", fmt.Errorf("reading response: %w", os.ErrDeadlineExceeded), "timeout"},
		{"the context's deadline passed", context.DeadlineExceeded, "timeout"},
		{"the sandbox went away", fmt.Errorf("dial: %w", context.Canceled), "canceled"},
		{"a certificate that does not verify", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "certificate"},
		{"anything else", errors.New("malformed response"), "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorKind(tt.err); got != tt.want {
				t.Errorf("ErrorKind(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}
