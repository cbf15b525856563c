package connlimit

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
)

// script is a listener that answers Accept from a list.
type script struct {
	net.Listener
	errs []error
	conn net.Conn
}

func (s *script) Accept() (net.Conn, error) {
	if len(s.errs) > 0 {
		err := s.errs[0]
		s.errs = s.errs[1:]
		return nil, err
	}
	return s.conn, nil
}

func TestAcceptBacksOffOnTemporaryFailuresAndStopsWhenClosed(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	open := func() bool { return false }
	ln := &script{errs: []error{syscall.EMFILE, syscall.ENFILE}, conn: c1}
	if c, err := Accept(ln, open, log, "test"); c != c1 || err != nil {
		t.Errorf("after two temporary failures: %v, %v; want the connection", c, err)
	}
	if c, err := Accept(&script{errs: []error{net.ErrClosed}}, func() bool { return true }, log, "test"); c != nil || err != nil {
		t.Errorf("closed: %v, %v; want nil, nil", c, err)
	}
	c, err := Accept(&script{errs: []error{errors.New("broken")}}, open, log, "test")
	if c != nil || err == nil || !strings.Contains(err.Error(), "serving test: broken") {
		t.Errorf("a lasting failure: %v, %v", c, err)
	}
}
