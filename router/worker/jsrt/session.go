package jsrt

import (
	"context"
	"fmt"
	"io"

	"github.com/dop251/goja"
)

// Session is one request's loop kept open across several steps: a handler's
// call, then (after the host has written the response) the promises it gave
// ctx.waitUntil, which may wait on timers and host work the call started.
// Call drops those at its end; a Session keeps them until End. The CPU
// limit covers the whole session.
type Session struct{ rt *Runtime }

// Open begins a session bound to ctx. Call End when done.
func (rt *Runtime) Open(ctx context.Context) *Session {
	rt.begin(ctx)
	rt.open = true
	return &Session{rt: rt}
}

// Call invokes fn(args...) and runs the loop until the promise it returns
// settles, as Runtime.Call does, leaving the loop's other work pending.
func (s *Session) Call(fn goja.Value, args ...goja.Value) (goja.Value, error) {
	f, ok := goja.AssertFunction(fn)
	if !ok {
		return nil, fmt.Errorf("calling a %s: not a function", typeName(fn))
	}
	var res goja.Value
	if err := s.rt.run(func() (err error) { res, err = f(goja.Undefined(), args...); return err }); err != nil {
		return nil, err
	}
	return s.rt.await(res)
}

// Await runs the loop until v (if it is a promise) settles.
func (s *Session) Await(v goja.Value) (goja.Value, error) { return s.rt.await(v) }

// End drops what the session left behind (timers, late host results).
func (s *Session) End() {
	s.rt.open = false
	s.rt.end()
}

// NewBody returns a handle on r that a body-taking constructor accepts (new
// Response(h), new Request(url, {body: h})): the body streams from r as it
// is read, and fetch() or a binding given it takes r itself, not a copy
// through JavaScript. r is closed at its end if it is an io.Closer.
func (rt *Runtime) NewBody(r io.Reader) goja.Value { return rt.newStream(r) }
