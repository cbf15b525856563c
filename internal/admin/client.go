package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/interceptd/interceptd/netns"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/store"
)

// Client talks to the admin API over its unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{socket: path, hc: &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// ErrUnreachable is returned when nothing answers on the admin socket.
var ErrUnreachable = errors.New("cannot reach the daemon")

// APIError is an error answer from the daemon.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return e.Message }

func (c *Client) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://interceptd"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return unreachable(c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		var e struct{ Error string }
		json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Create creates a sandbox; a nil patch takes the default policy.
func (c *Client) Create(name string, pp *PolicyPatch) (netns.Sandbox, error) {
	return c.CreateWith(CreateRequest{Name: name, Policy: pp})
}

// CreateWith creates a sandbox as req describes (policy, quota overrides).
func (c *Client) CreateWith(req CreateRequest) (netns.Sandbox, error) {
	var sb netns.Sandbox
	err := c.do(http.MethodPost, "/v1/sandboxes", req, &sb)
	return sb, err
}

// Show returns one sandbox with its store usage and quota.
func (c *Client) Show(name string) (SandboxInfo, error) {
	var sb SandboxInfo
	err := c.do(http.MethodGet, "/v1/sandboxes/"+url.PathEscape(name), nil, &sb)
	return sb, err
}

// SetQuota replaces a sandbox's quota overrides and returns its quotas.
func (c *Client) SetQuota(name string, overrides map[string]int64) (store.Amounts, error) {
	var q store.Amounts
	if overrides == nil {
		overrides = map[string]int64{}
	}
	err := c.do(http.MethodPatch, "/v1/sandboxes/"+url.PathEscape(name)+"/quota", overrides, &q)
	return q, err
}

// SetLimits replaces a sandbox's own limits (the zero Limits: the daemon's
// defaults again).
func (c *Client) SetLimits(name string, l policy.Limits) (policy.Limits, error) {
	var out policy.Limits
	err := c.do(http.MethodPut, "/v1/sandboxes/"+url.PathEscape(name)+"/limits", l, &out)
	return out, err
}

// Reload asks the daemon to re-read its config file. A refused reload is an
// *APIError (422) saying why; a reload applied with a part that kept its
// previous version returns the result and an error saying which.
func (c *Client) Reload() (ReloadResult, error) {
	var res ReloadResult
	if err := c.do(http.MethodPost, "/v1/reload", nil, &res); err != nil {
		return res, err
	}
	if res.Error != "" {
		return res, errors.New(res.Error)
	}
	return res, nil
}

// Policy returns a sandbox's policy.
func (c *Client) Policy(name string) (policy.Policy, error) {
	var p policy.Policy
	err := c.do(http.MethodGet, "/v1/sandboxes/"+url.PathEscape(name)+"/policy", nil, &p)
	return p, err
}

// SetPolicy changes a running sandbox's policy: the fields given replace.
func (c *Client) SetPolicy(name string, pp PolicyPatch) (policy.Policy, error) {
	var p policy.Policy
	err := c.do(http.MethodPatch, "/v1/sandboxes/"+url.PathEscape(name)+"/policy", pp, &p)
	return p, err
}

// Delete deletes a sandbox.
func (c *Client) Delete(name string) error {
	return c.do(http.MethodDelete, "/v1/sandboxes/"+url.PathEscape(name), nil, nil)
}

// List lists sandboxes.
func (c *Client) List() ([]netns.Sandbox, error) {
	var out []netns.Sandbox
	err := c.do(http.MethodGet, "/v1/sandboxes", nil, &out)
	return out, err
}

// Get returns one sandbox.
func (c *Client) Get(name string) (netns.Sandbox, error) {
	var sb netns.Sandbox
	err := c.do(http.MethodGet, "/v1/sandboxes/"+url.PathEscape(name), nil, &sb)
	return sb, err
}

// Handler sends a request to a handler through the admin API, acting as
// sandbox (empty for a shared handler), and returns the raw response.
func (c *Client) Handler(method, host, key, sandbox string, query url.Values, body io.Reader, header http.Header) (*http.Response, error) {
	if query == nil {
		query = url.Values{}
	}
	if sandbox != "" {
		query.Set("sandbox", sandbox)
	}
	return c.raw(method, "/v1/handlers/"+url.PathEscape(host)+"/", key, query, body, header)
}

// Namespace sends a KV request straight to a namespace (shared scope), one
// that no handler needs to expose: where per-sandbox secrets are seeded.
func (c *Client) Namespace(method, ns, key string, query url.Values, body io.Reader, header http.Header) (*http.Response, error) {
	return c.raw(method, "/v1/kv/"+url.PathEscape(ns)+"/", key, query, body, header)
}

func (c *Client) raw(method, base, key string, query url.Values, body io.Reader, header http.Header) (*http.Response, error) {
	u := "http://interceptd" + base + escapeKey(key)
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	hc := *c.hc
	hc.Timeout = 0 // blobs may take long
	resp, err := hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			return nil, fmt.Errorf("%w at %s (is `interceptd serve` running? set --admin-socket or INTERCEPTD_SOCKET): %v", ErrUnreachable, c.socket, ne.Err)
		}
	}
	return resp, err
}

// Handlers lists the configured handlers.
func (c *Client) Handlers() ([]HandlerInfo, error) {
	var out []HandlerInfo
	err := c.do(http.MethodGet, "/v1/handlers", nil, &out)
	return out, err
}

// DeleteSandbox deletes a sandbox; with purge, also everything it stored.
func (c *Client) DeleteSandbox(name string, purge bool) error {
	p := "/v1/sandboxes/" + url.PathEscape(name)
	if purge {
		p += "?purge=1"
	}
	return c.do(http.MethodDelete, p, nil, nil)
}

// escapeKey escapes a key segment by segment, so slashes stay separators
// and everything else is carried exactly.
func escapeKey(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// StoreStats returns the store's statistics.
func (c *Client) StoreStats(check bool) (store.Stats, error) {
	var st store.Stats
	p := "/v1/store"
	if check {
		p += "?check=1"
	}
	err := c.do(http.MethodGet, p, nil, &st)
	return st, err
}

// Status returns the daemon's status.
func (c *Client) Status() (Status, error) {
	var st Status
	err := c.do(http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// CACert returns the PEM certificate of the daemon's CA, or nil and no
// error when the daemon has none (HTTPS interception off, or a daemon from
// before GET /v1/ca).
func (c *Client) CACert() ([]byte, error) {
	var ca CA
	err := c.do(http.MethodGet, "/v1/ca", nil, &ca)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []byte(ca.Certificate), nil
}

// Attach makes an existing namespace a sandbox (the CNI plugin's ADD).
func (c *Client) Attach(name, nsPath, ifName string) (netns.Sandbox, error) {
	var sb netns.Sandbox
	err := c.do(http.MethodPost, "/v1/sandboxes", CreateRequest{Name: name, NetnsPath: nsPath, Interface: ifName}, &sb)
	return sb, err
}

// AttachWith makes an existing namespace a sandbox with what req says
// besides (the CNI plugin's ADD with a worker).
func (c *Client) AttachWith(req CreateRequest) (netns.Sandbox, error) {
	var sb netns.Sandbox
	err := c.do(http.MethodPost, "/v1/sandboxes", req, &sb)
	return sb, err
}

// SetWorker gives a running sandbox a worker ("" for none).
func (c *Client) SetWorker(name, worker string) (netns.Sandbox, error) {
	var sb netns.Sandbox
	err := c.do(http.MethodPut, "/v1/sandboxes/"+url.PathEscape(name)+"/worker", WorkerRequest{Worker: worker}, &sb)
	return sb, err
}

// Check verifies a sandbox's wiring.
func (c *Client) Check(name string) error {
	return c.do(http.MethodGet, "/v1/sandboxes/"+url.PathEscape(name)+"/check", nil, nil)
}

// Workers lists the daemon's workers.
func (c *Client) Workers() ([]WorkerInfo, error) {
	var out []WorkerInfo
	err := c.do(http.MethodGet, "/v1/workers", nil, &out)
	return out, err
}

// ReloadWorker reloads a worker's script.
func (c *Client) ReloadWorker(name string) error {
	return c.do(http.MethodPost, "/v1/workers/"+url.PathEscape(name)+"/reload", nil, nil)
}

// unreachable says why the daemon could not be asked: not there (is it
// running? the right socket?), or there and refusing this user.
func unreachable(socket string, err error) error {
	var ne *net.OpError
	if !errors.As(err, &ne) {
		return err
	}
	if errors.Is(ne.Err, os.ErrPermission) {
		// The daemon is there; this user may not talk to it.
		return fmt.Errorf("%w at %s: permission denied: run the command as root (sudo), or as a member of the socket's group (admin_socket_group in the daemon's config)", ErrUnreachable, socket)
	}
	return fmt.Errorf("%w at %s (is `interceptd serve` running? set --admin-socket or INTERCEPTD_SOCKET): %v", ErrUnreachable, socket, ne.Err)
}
