package kinds

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store"
)

func init() { Register(Kind{Name: "proxy", NewConfig: func() Config { return &Proxy{} }}) }

// Proxy is a proxy handler: it forwards to a fixed upstream, adding secret
// headers the sandbox never sees.
type Proxy struct {
	// Upstream is the URL forwarded to (http or https); the path of the
	// request is appended to its path. The proxy dials this upstream, never
	// the address the sandbox chose.
	Upstream string `yaml:"upstream"`
	// SetHeaders are set on the upstream request, overwriting the sandbox's;
	// {sandbox} in a value is the calling sandbox's name (off unless a value
	// says it), so the upstream knows which container called.
	SetHeaders map[string]string `yaml:"set_headers"`
	// RemoveHeaders are removed from the upstream request.
	RemoveHeaders []string `yaml:"remove_headers"`
	// Inject adds secret headers the sandbox never sees.
	Inject []Inject `yaml:"inject"`
	// CAFile verifies an https upstream against this CA bundle instead of
	// the system roots.
	CAFile string `yaml:"ca_file"`
}

// Inject is one credential header of a proxy handler. The secret comes from
// exactly one of File, Credential (a systemd credential, read from
// $CREDENTIALS_DIRECTORY) or KVNamespace (the value stored under the calling
// sandbox's name in that KV namespace) — never from the config itself.
type Inject struct {
	Header string `yaml:"header"`
	// Template places the secret: "Bearer {secret}". Default "{secret}".
	Template    string `yaml:"template"`
	File        string `yaml:"file"`
	Credential  string `yaml:"credential"`
	KVNamespace string `yaml:"kv_namespace"`
}

func (c *Proxy) Validate(bad func(field, format string, args ...any)) {
	u, err := url.Parse(c.Upstream)
	switch {
	case c.Upstream == "":
		bad("upstream", "a proxy handler needs an upstream URL")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		bad("upstream", "%q is not an http:// or https:// URL", c.Upstream)
	}
	for j, in := range c.Inject {
		g := fmt.Sprintf("inject[%d]", j)
		n := 0
		for _, v := range []string{in.File, in.Credential, in.KVNamespace} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			bad(g, "set exactly one of file, credential, kv_namespace")
		}
		if in.Header == "" {
			bad(g+".header", "missing")
		}
		if in.Template != "" && !strings.Contains(in.Template, "{secret}") {
			bad(g+".template", "%q has no {secret}", in.Template)
		}
	}
}

func (c *Proxy) Build(d Deps) (router.Handler, error) {
	u, err := url.Parse(c.Upstream)
	if err != nil {
		return nil, fmt.Errorf("handler %s: upstream: %w", d.Host, err)
	}
	p := &handlers.Proxy{
		Name: d.Host, Upstream: u, SetHeaders: c.SetHeaders, RemoveHeaders: c.RemoveHeaders,
		Resolve: d.Resolve, Metrics: d.Metrics, Logger: d.Logger,
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("handler %s: ca_file: %w", d.Host, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("handler %s: ca_file %s holds no PEM certificate", d.Host, c.CAFile)
		}
		p.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	reload := d.Reloadable
	if reload == nil {
		reload = func(*handlers.FileSecret) {}
	}
	for i, in := range c.Inject {
		var sec handlers.Secret
		switch {
		case in.File != "":
			fs := &handlers.FileSecret{Path: in.File}
			if err := fs.Load(); err != nil {
				return nil, fmt.Errorf("handler %s: inject[%d]: %w", d.Host, i, err)
			}
			reload(fs)
			sec = fs
		case in.Credential != "":
			fs, err := handlers.CredentialSecret(in.Credential)
			if err == nil {
				err = fs.Load()
			}
			if err != nil {
				return nil, fmt.Errorf("handler %s: inject[%d]: %w", d.Host, i, err)
			}
			reload(fs)
			sec = fs
		default:
			sec = &handlers.KVSecret{KV: d.Stores.Keys(store.KindKV, in.KVNamespace, store.ScopeShared, store.Limits{})}
		}
		p.Inject = append(p.Inject, handlers.Injection{Header: in.Header, Template: in.Template, Secret: sec})
	}
	return p, nil
}
