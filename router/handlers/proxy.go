package handlers

import (
	"bufio"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/forward"
	"github.com/interceptd/interceptd/router/wire"
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
	Metrics *forward.Metrics
	Logger  *slog.Logger

	// Set up at the first request, as Forward is: no handler needs a call
	// before it serves.
	once  sync.Once
	proxy *httputil.ReverseProxy
}

var _ router.UpgradeCarrier = (*Proxy)(nil)

// CarriesUpgrades implements router.UpgradeCarrier: the handshake goes to
// the upstream with the headers set and injected as any request's; the
// 101's headers come back scrubbed as any response's; the stream after it
// passes through unchanged and is not scrubbed (docs/handlers.md).
func (p *Proxy) CarriesUpgrades() bool { return true }

type proxyKey struct{}

type proxyReq struct {
	secrets map[string]string // header → value
	scrub   *scrubber         // nil when nothing is injected
	sandbox string            // the caller's name, for {sandbox} in SetHeaders
}

// init builds the reverse proxy; ServeHTTP runs it once.
func (p *Proxy) init() {
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
		BufferPool: wire.CopyBuffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.Upstream)
			pr.Out.Host = p.Upstream.Host
			for _, h := range p.RemoveHeaders {
				pr.Out.Header.Del(h)
			}
			preq := pr.In.Context().Value(proxyKey{}).(*proxyReq)
			for k, v := range p.SetHeaders {
				// {sandbox}: the calling sandbox's name, so that the operator's
				// own service knows which container called.
				pr.Out.Header.Set(k, strings.ReplaceAll(v, "{sandbox}", preq.sandbox))
			}
			for h, v := range preq.secrets {
				pr.Out.Header.Set(h, v) // overwrites what the sandbox sent
			}
			if preq.scrub != nil {
				// Bodies must be plain for the secret scrubber to see them.
				pr.Out.Header.Set("Accept-Encoding", "identity")
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			// Header blocks are scrubbed as they are written (see
			// scrubbingWriter); the body here, as it streams.
			preq := resp.Request.Context().Value(proxyKey{}).(*proxyReq)
			if preq.scrub != nil && resp.StatusCode == http.StatusSwitchingProtocols {
				// ReverseProxy writes a 101's head itself, after taking the
				// connection over, past the scrubbingWriter: scrub it here.
				// Its body is the stream, which must stay the upstream's
				// connection to be carried, and is passed through unscrubbed.
				preq.scrub.scrubHeader(resp.Header)
				return nil
			}
			if preq.scrub != nil {
				if err := decodeBody(resp); err != nil {
					return err
				}
				resp.Body = newRedactor(resp.Body, preq.scrub)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			kind := forward.ErrorKind(err)
			p.Metrics.Failed(kind)
			// The error names the upstream, never a header: no secret in it.
			p.Logger.Warn("proxy upstream failed", "handler", p.Name, "kind", kind)
			reason := "upstream " + kind
			if errors.Is(err, errEncodedBody) {
				reason = "upstream sent a body in a content coding that cannot be scrubbed of the injected secret"
			}
			fail := &router.Error{Status: http.StatusBadGateway, Reason: reason, Logged: true}
			if !forward.Report(r, fail) {
				router.WriteError(w, fail)
			}
		},
		ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
}

var errNoAddress = errors.New("no address")

// errEncodedBody refuses a body the scrubber could not read: one in a
// content coding other than gzip or deflate, or in several.
var errEncodedBody = errors.New("a body in a content coding the proxy cannot undo")

// decodeBody undoes the content coding of a response the proxy asked to
// get as identity (an always-on compression middleware ignores that): a
// secret inside compressed bytes would pass the scrubber unseen. gzip and
// deflate are undone as the body streams, and the head then announces
// neither the coding nor a length; any other coding is refused. The coding's
// name is never echoed: the upstream chose it, and it could hold the secret.
func decodeBody(resp *http.Response) error {
	var codings []string
	for _, v := range resp.Header.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			if c = strings.ToLower(textproto.TrimString(c)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	if len(codings) == 0 {
		return nil
	}
	var open func(io.Reader) (io.Reader, error)
	switch {
	case len(codings) > 1:
		return errEncodedBody
	case codings[0] == "gzip" || codings[0] == "x-gzip":
		open = func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }
	case codings[0] == "deflate":
		open = openDeflate
	default:
		return errEncodedBody
	}
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	resp.Body = &decodingBody{src: resp.Body, open: open}
	return nil
}

// openDeflate reads HTTP's "deflate": zlib-wrapped as RFC 9110 says, or raw
// DEFLATE as some servers send it.
func openDeflate(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	if h, err := br.Peek(2); err == nil && h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}

// decodingBody opens its decoder at the first read, so an empty body (a
// HEAD, a 304) is no error, and the decoder's first read of a slow upstream
// does not hold up the head.
type decodingBody struct {
	src  io.ReadCloser
	open func(io.Reader) (io.Reader, error)
	r    io.Reader
}

func (d *decodingBody) Read(p []byte) (int, error) {
	if d.r == nil {
		r, err := d.open(d.src)
		if err != nil {
			return 0, err
		}
		d.r = r
	}
	return d.r.Read(p)
}

func (d *decodingBody) Close() error { return d.src.Close() }

// ServeHTTP implements router.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request, env router.Env) error {
	p.once.Do(p.init)
	preq := &proxyReq{secrets: map[string]string{}, sandbox: env.Sandbox}
	var raw [][]byte
	for _, in := range p.Inject {
		v, err := in.Secret.Value(env)
		if err != nil {
			p.Logger.Warn("credential unavailable", "handler", p.Name, "sandbox", env.Sandbox, "header", in.Header, "error", err)
			return &router.Error{Status: http.StatusBadGateway, Reason: "credential for " + in.Header + " is unavailable"}
		}
		val := string(v)
		if in.Template != "" {
			val = strings.ReplaceAll(in.Template, "{secret}", val)
		}
		preq.secrets[in.Header] = val
		// The template's text is the config's, not secret: masking the
		// secret masks every value that holds it.
		raw = append(raw, v)
	}
	if len(raw) > 0 {
		preq.scrub = newScrubber(raw)
	}
	r = r.WithContext(context.WithValue(r.Context(), proxyKey{}, preq))
	if preq.scrub == nil {
		return upstreamError(forward.ServeReverse(p.proxy, w, r))
	}
	sw := &scrubbingWriter{ResponseWriter: w, s: preq.scrub}
	// Trailers are in w's header map when ReverseProxy returns, and are
	// written after: scrub them then (and on an abort, for good measure).
	defer preq.scrub.scrubHeader(w.Header())
	return upstreamError(forward.ServeReverse(p.proxy, sw, r))
}

// scrubbingWriter scrubs each header block as it goes out: interim heads
// (103 Early Hints, which ReverseProxy copies from the upstream straight
// into the writer, past ModifyResponse) and the final head. Trailers are
// scrubbed when the handler returns, bodies by the redactor.
type scrubbingWriter struct {
	http.ResponseWriter
	s     *scrubber
	wrote bool
}

func (w *scrubbingWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.wrote = true
	}
	w.s.scrubHeader(w.ResponseWriter.Header())
	w.ResponseWriter.WriteHeader(code)
}

func (w *scrubbingWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK) // not the underlying writer's implicit one, unscrubbed
	}
	return w.ResponseWriter.Write(b)
}

// Flush implements http.Flusher, scrubbing the head if it is not out yet.
func (w *scrubbingWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *scrubbingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
