package admin

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestAnUnreachableDaemonIsToldApartFromARefusedUser(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"no daemon", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENOENT)}, "is `interceptd serve` running?"},
		{"a daemon that refuses this user", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EACCES)}, "permission denied: run the command as root (sudo), or as a member of the socket's group"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := unreachable("/run/interceptd/admin.sock", tt.err)
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want it to say %q", err, tt.want)
			}
		})
	}
}
