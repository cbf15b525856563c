package router

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Injection is one credential header a Proxy sets.
type Injection struct {
	Header string
	// Template places the secret: "Bearer {secret}"; empty means the secret.
	Template string
	Secret   Secret
}

// Proxy forwards to its configured upstream (http, or https even when the
// sandbox spoke plain http), sets, removes and injects headers, and never
// lets the sandbox see an injected secret: response headers and bodies are
// scrubbed of it, and it never appears in errors or logs. It dials its own
// upstream, never the address the sandbox chose: the Host header is the
// sandbox's word, not a fact.
type Proxy struct {
	Name          string
	Upstream      *url.URL
	SetHeaders    map[string]string
	RemoveHeaders []string
	Inject        []Injection
	// TLS verifies an https upstream; nil means the system roots.
	TLS *tls.Config
	// Resolve resolves the upstream's name through the daemon's resolvers;
	// nil uses the system resolver.
	Resolve func(name string) ([]netip.Addr, time.Duration, error)
	Metrics *Metrics
	Logger  *slog.Logger

	proxy *httputil.ReverseProxy
}

var _ Handler = (*Proxy)(nil)

type proxyKey struct{}

type proxyReq struct {
	secrets map[string]string // header → value
	raw     [][]byte
}

// Init builds the proxy; call once before serving.
func (p *Proxy) Init() {
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if _, err := netip.ParseAddr(host); err == nil || p.Resolve == nil {
				return d.DialContext(ctx, network, addr)
			}
			addrs, _, err := p.Resolve(host)
			if err != nil || len(addrs) == 0 {
				return nil, fmt.Errorf("resolving upstream %s: %w", host, errors.Join(err, errNoAddress))
			}
			var errs []error
			for _, a := range addrs {
				c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
				if err == nil {
					return c, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
		TLSClientConfig:     p.TLS,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		Proxy:               nil,
	}
	p.proxy = &httputil.ReverseProxy{
		Transport:  tr,
		BufferPool: copyBuffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.Upstream)
			pr.Out.Host = p.Upstream.Host
			for _, h := range p.RemoveHeaders {
				pr.Out.Header.Del(h)
			}
			for k, v := range p.SetHeaders {
				pr.Out.Header.Set(k, v)
			}
			preq := pr.In.Context().Value(proxyKey{}).(*proxyReq)
			for h, v := range preq.secrets {
				pr.Out.Header.Set(h, v) // overwrites what the sandbox sent
			}
			if len(preq.raw) > 0 {
				// Bodies must be plain for the secret scrubber to see them.
				pr.Out.Header.Set("Accept-Encoding", "identity")
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			preq := resp.Request.Context().Value(proxyKey{}).(*proxyReq)
			if len(preq.raw) == 0 {
				return nil
			}
			for k, vs := range resp.Header {
				for i, v := range vs {
					b := []byte(v)
					mask(b, preq.raw)
					vs[i] = string(b)
				}
				resp.Header[k] = vs
			}
			resp.Body = newRedactor(resp.Body, preq.raw)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			kind := dialErrorKind(err)
			p.Metrics.forwardError(kind)
			// The error names the upstream, never a header: no secret in it.
			p.Logger.Warn("proxy upstream failed", "handler", p.Name, "kind", kind)
			WriteError(w, &Error{Status: http.StatusBadGateway, Reason: "upstream " + kind})
		},
		ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
}

var errNoAddress = errors.New("no address")

// ServeHTTP implements Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request, env Env) error {
	preq := &proxyReq{secrets: map[string]string{}}
	for _, in := range p.Inject {
		v, err := in.Secret.Value(env)
		if err != nil {
			p.Logger.Warn("credential unavailable", "handler", p.Name, "sandbox", env.Sandbox, "header", in.Header, "error", err)
			return &Error{Status: http.StatusBadGateway, Reason: "credential for " + in.Header + " is unavailable"}
		}
		val := string(v)
		if in.Template != "" {
			val = strings.ReplaceAll(in.Template, "{secret}", val)
		}
		preq.secrets[in.Header] = val
		preq.raw = append(preq.raw, bytes.Clone(v))
		if val != string(v) {
			preq.raw = append(preq.raw, []byte(val))
		}
	}
	p.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), proxyKey{}, preq)))
	return nil
}
