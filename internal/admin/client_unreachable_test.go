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
		{"a daemon that refuses this user", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EACCES)}, "permission denied: the admin socket is the daemon's owner's (root's): run the command as root"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := unreachable("/run/interceptd/admin.sock", tt.err)
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want it to say %q", err, tt.want)
			}
		})
	}
}
