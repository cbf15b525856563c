package handlers

import (
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
)

// Respond answers every request with a fixed status, headers and body:
// stubs, health endpoints, and the benchmark floor.
type Respond struct {
	Status  int
	Headers map[string]string
	Body    string

	once sync.Once
	hdr  http.Header // Headers, Content-Type and Content-Length, built once
}

var _ router.Handler = (*Respond)(nil)

// ServeHTTP implements router.Handler.
func (h *Respond) ServeHTTP(w http.ResponseWriter, r *http.Request, env router.Env) error {
	h.once.Do(func() {
		h.hdr = http.Header{}
		for k, v := range h.Headers {
			h.hdr.Set(k, v)
		}
		if h.hdr.Get("Content-Type") == "" {
			h.hdr.Set("Content-Type", "text/plain; charset=utf-8")
		}
		h.hdr.Set("Content-Length", strconv.Itoa(len(h.Body)))
	})
	hd := w.Header()
	for k, v := range h.hdr {
		hd[k] = v // shared, read-only: the server only reads them
	}
	status := h.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		io.WriteString(w, h.Body)
	}
	return nil
}

// Deny answers every request with the deny response, reason denied_host:
// an explicit block for a host, with the same body and status as policy's.
type Deny struct {
	Status int
	Body   string
}

var _ router.UpgradeCarrier = (*Deny)(nil)

// CarriesUpgrades implements router.UpgradeCarrier: an Upgrade request to a
// blocked host is denied like any other request to it, not refused as
// unsupported.
func (h *Deny) CarriesUpgrades() bool { return true }

// ServeHTTP implements router.Handler.
func (h *Deny) ServeHTTP(w http.ResponseWriter, r *http.Request, env router.Env) error {
	router.WriteDeny(w, r, h.Status, h.Body, env.RequestID, policy.ReasonDenied, policy.Sanitize(env.Host)+" is blocked by a deny handler")
	return nil
}
