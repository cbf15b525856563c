package router

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
)

// Handler answers an intercepted request. It is the one contract every
// handler kind implements.
//
// The handler writes the response itself when it returns nil. When it returns
// an error before writing anything, the router writes the response: an *Error
// gives the status and the reason shown to the client; any other error is a
// 500 whose detail stays in the log. A handler that has started writing must
// not return an error it wants shown: the status line has already gone. A
// handler whose response had begun and cannot be finished (an upstream that
// cut it short) returns an error wrapping ErrAborted: the router then cuts
// the connection, so the sandbox sees a truncated response, not a
// complete-looking one. No handler writes its own error response or panics.
type Handler interface {
	ServeHTTP(w http.ResponseWriter, r *http.Request, env Env) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(w http.ResponseWriter, r *http.Request, env Env) error

// ServeHTTP calls f.
func (f HandlerFunc) ServeHTTP(w http.ResponseWriter, r *http.Request, env Env) error {
	return f(w, r, env)
}

// Env is what the router knows about a request beyond the request itself.
// It is the daemon's word, not the container's: Sandbox comes from the
// source address, Dest from the socket.
type Env struct {
	// Sandbox is the name of the calling sandbox.
	Sandbox string
	// Source is the sandbox's address and port.
	Source netip.AddrPort
	// Dest is the address the sandbox connected to (the original destination).
	Dest netip.AddrPort
	// Host is the normalised host the request was dispatched on: lowercase,
	// no port, no trailing dot. It may be empty.
	Host string
	// Handler is the metric label of the chosen handler.
	Handler string
	// RequestID identifies the request in logs and deny bodies.
	RequestID string
	// Operator marks a request from the admin API (the CLI) acting as
	// Sandbox: what it stores is charged to no sandbox's quota.
	Operator bool
	// Conn is the connection the request came on (see Conn); nil for a
	// request that came on none (the admin API's).
	Conn Conn
}

// Error is an error with the HTTP status and the client-facing reason the
// router answers with.
type Error struct {
	Status int
	// Reason is shown to the client; it must not contain secrets.
	Reason string
	// Err is the underlying cause, logged but not shown.
	Err error

	// Logged: the handler has logged the cause as it should be (a failed
	// upstream, at its own level); the router does not warn again.
	Logged bool
}

// ErrAborted marks a response that had begun and was cut short: see Handler.
var ErrAborted = errors.New("response cut short")

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Reason, e.Err)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Reason)
}

func (e *Error) Unwrap() error { return e.Err }

// Owner is the sandbox a store write is charged to: the calling sandbox,
// or none for an operator.
func (env Env) Owner() string {
	if env.Operator {
		return ""
	}
	return env.Sandbox
}

// Errorf returns an *Error with status and a formatted reason.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Reason: fmt.Sprintf(format, args...)}
}

// WriteError answers with err's status and reason as text.
func WriteError(w http.ResponseWriter, err error) int {
	var he *Error
	if !errors.As(err, &he) {
		he = &Error{Status: http.StatusInternalServerError, Reason: "internal error"}
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Interceptd-Error", he.Reason)
	w.WriteHeader(he.Status)
	fmt.Fprintf(w, "interceptd: %s\n", he.Reason)
	return he.Status
}

// WriteJSON answers with code and v as indented JSON (no body for HEAD).
func WriteJSON(w http.ResponseWriter, r *http.Request, code int, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
	return nil
}
