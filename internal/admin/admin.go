// Package admin is the daemon's local control API: JSON over HTTP on a unix
// socket that only root can open. The CLI is its client.
//
//	POST   /v1/sandboxes         {"name": "web1"}  → 201 sandbox
//	GET    /v1/sandboxes                           → 200 [sandbox]
//	GET    /v1/sandboxes/{name}                    → 200 sandbox
//	DELETE /v1/sandboxes/{name}                    → 204
//
// Errors are {"error": "..."} with a 4xx for the caller's mistakes.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/interceptd/interceptd/netns"
)

// Sandboxes is what the API manages.
type Sandboxes interface {
	Create(name string) (netns.Sandbox, error)
	Delete(name string) error
	Get(name string) (netns.Sandbox, bool)
	List() []netns.Sandbox
}

// Server serves the admin API on a unix socket.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen creates the socket at path (replacing a stale one) with mode 0600.
func Listen(path string, sb Sandboxes, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket dir: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin socket %s is in use: is another interceptd running?", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restricting admin socket: %w", err)
	}
	mux := http.NewServeMux()
	h := &handlers{sb: sb}
	mux.HandleFunc("POST /v1/sandboxes", h.create)
	mux.HandleFunc("GET /v1/sandboxes", h.list)
	mux.HandleFunc("GET /v1/sandboxes/{name}", h.get)
	mux.HandleFunc("DELETE /v1/sandboxes/{name}", h.delete)
	return &Server{ln: ln, srv: &http.Server{
		Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}, nil
}

// Serve serves until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving admin api: %w", err)
	}
	return nil
}

// Shutdown stops the server; the socket file is removed.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

type handlers struct{ sb Sandboxes }

// CreateRequest is the body of POST /v1/sandboxes.
type CreateRequest struct {
	Name string `json:"name"`
}

func (h *handlers) create(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("decoding request: %w", err))
		return
	}
	sb, err := h.sb.Create(req.Name)
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusCreated, sb)
}

func (h *handlers) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.sb.List())
}

func (h *handlers) get(w http.ResponseWriter, r *http.Request) {
	sb, ok := h.sb.Get(r.PathValue("name"))
	if !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("%w: %s", netns.ErrNotFound, r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

func (h *handlers) delete(w http.ResponseWriter, r *http.Request) {
	if err := h.sb.Delete(r.PathValue("name")); err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, netns.ErrExists):
		return http.StatusConflict
	case errors.Is(err, netns.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, netns.ErrInvalidName):
		return http.StatusBadRequest
	case errors.Is(err, netns.ErrPoolExhausted):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
