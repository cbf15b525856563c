// Package config defines interceptd's versioned YAML configuration, its embedded
// default, and strict decoding: an unknown or mistyped field is an error that
// names the field and its line.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/interceptd/interceptd/internal/kinds"
	"github.com/interceptd/interceptd/policy"
	"go.yaml.in/yaml/v3"
)

// CurrentVersion is the only config version this build understands.
const CurrentVersion = 1

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded default configuration document.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// Config is the whole daemon configuration.
type Config struct {
	// Version must be 1.
	Version int `yaml:"version"`
	// DataDir holds the bbolt store (interceptd.db).
	DataDir string `yaml:"data_dir"`
	// AdminSocket is the unix socket of the admin API used by the CLI.
	AdminSocket string `yaml:"admin_socket"`
	// AdminSocketGroup, when set, is the group (a name or a gid) whose
	// members may use the admin socket (mode 0660); empty: root only.
	AdminSocketGroup string `yaml:"admin_socket_group"`
	// Listen names the daemon's own listeners.
	Listen Listen `yaml:"listen"`
	// TLS configures interception of HTTPS for handlers marked https.
	TLS TLS `yaml:"tls"`
	// DNS configures the DNS shim.
	DNS DNS `yaml:"dns"`
	// Sandbox configures namespaces, addressing and names.
	Sandbox Sandbox `yaml:"sandbox"`
	// Policy is the egress policy a sandbox gets unless its creation or a
	// later `sandbox policy` says otherwise.
	Policy policy.Policy `yaml:"policy"`
	// Deny shapes the answer to a request that policy denies.
	Deny Deny `yaml:"deny"`
	// Metrics shapes the daemon's metrics.
	Metrics Metrics `yaml:"metrics"`
	// Handlers maps hostnames to in-process handlers. Host "*" is the
	// catch-all: it serves what no per-host handler does and policy lets by.
	Handlers []Handler `yaml:"handlers"`
	// Workers are the JavaScript handlers sandboxes may name (workers.go).
	Workers []Worker `yaml:"workers"`
	// DefaultWorker is the worker a new sandbox uses unless its creation
	// names another (or none); "" for none. It must name one of Workers.
	DefaultWorker string `yaml:"default_worker"`
	// WorkerHeapLimit bounds the daemon's heap while workers' JavaScript
	// runs: past it, the scripts running are interrupted (503
	// worker_memory_limit) rather than the daemon running out of memory.
	// goja cannot bound one runtime; this bounds them together. 0: none.
	WorkerHeapLimit Size `yaml:"worker_heap_limit"`
	// Store shapes the stores: the bbolt store in data_dir, and where KV
	// and per-sandbox state live (bbolt or etcd).
	Store Store `yaml:"store"`

	// path is the file Load read; "" for the embedded default.
	path string
	// overrides are the command line's changes to the file (serve's
	// flags), made again to every config Reread makes.
	overrides func(*Config)
	// lines maps a field's dotted path (as Validate names it) to its line
	// in the document Parse read, so that Validate can say where.
	lines map[string]int
	// Quota bounds what one sandbox's writes may occupy in each store kind;
	// `sandbox create --quota` overrides it per sandbox.
	Quota Quota `yaml:"quota"`
}

// Store shapes the store.
type Store struct {
	// MinFreeBytes is the free-space floor of data_dir's filesystem: while
	// less is free, writes to kv, state and blob handlers are refused (507,
	// reason disk_full); reads and deletes go on. 0 disables the floor.
	MinFreeBytes Size `yaml:"min_free_bytes"`
	// Backend is where KV and per-sandbox state live: "bbolt" (the file in
	// data_dir) or "etcd" (Etcd, shared by every host that names the same
	// cluster and prefix). Blobs and Durable Objects stay in bbolt.
	Backend string `yaml:"backend"`
	// Etcd is the etcd cluster of backend etcd.
	Etcd Etcd `yaml:"etcd"`
	// Blobs chooses where blob buckets live: in the bbolt file (the
	// default) or in an S3-compatible object store that a fleet of hosts
	// shares. Restart-only, as every engine setting.
	Blobs StoreBlobs `yaml:"blobs"`
}

// Store backends.
const (
	BackendBolt = "bbolt"
	BackendEtcd = "etcd"
)

// Etcd is an etcd cluster's client settings (store.etcd).
type Etcd struct {
	// Endpoints are the members' client URLs: http://host:port, or
	// https://host:port with TLS.
	Endpoints []string `yaml:"endpoints"`
	// Prefix is put before every key the daemon writes.
	Prefix string `yaml:"prefix"`
	// DialTimeout bounds the first connection to a member.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// RequestTimeout bounds every request: past it a store call fails
	// with 503 store_unavailable.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// Username and PasswordFile authenticate with etcd's auth; the file
	// holds the password (a trailing newline is dropped).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// MaxRequestBytes is the servers' --max-request-bytes: values are
	// limited to it less 64 KiB.
	MaxRequestBytes Size `yaml:"max_request_bytes"`
	// TLS is the client's TLS: the CA that signs the members'
	// certificates, and a client certificate and key.
	TLS EtcdTLS `yaml:"tls"`
}

// EtcdTLS are PEM files for TLS to etcd.
type EtcdTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Blob backends store.blobs.backend takes.
const (
	BlobsBolt = "bbolt"
	BlobsS3   = "s3"
)

// StoreBlobs is the blob engine.
type StoreBlobs struct {
	// Backend is "bbolt" or "s3".
	Backend string `yaml:"backend"`
	// S3 is the object store when Backend is "s3".
	S3 S3 `yaml:"s3"`
}

// S3 locates an S3-compatible bucket and says how to reach it. The keys
// come from files or systemd credentials, never from the config itself.
type S3 struct {
	// Endpoint is host:port (or a URL whose scheme says http or https).
	Endpoint string `yaml:"endpoint"`
	Bucket   string `yaml:"bucket"`
	Region   string `yaml:"region"`
	// Prefix is put before every object name, so that several fleets or
	// tests can share one bucket.
	Prefix string `yaml:"prefix"`
	// PathStyle addresses the bucket in the path (endpoint/bucket/key),
	// which every S3-compatible server takes; false uses virtual hosts
	// (bucket.endpoint), which AWS prefers.
	PathStyle bool `yaml:"path_style"`
	// AccessKeyFile and SecretKeyFile are files holding the keys; or
	// AccessKeyCredential and SecretKeyCredential name systemd credentials
	// (files in $CREDENTIALS_DIRECTORY). Exactly one of each pair.
	AccessKeyFile       string `yaml:"access_key_file"`
	SecretKeyFile       string `yaml:"secret_key_file"`
	AccessKeyCredential string `yaml:"access_key_credential"`
	SecretKeyCredential string `yaml:"secret_key_credential"`
	TLS                 S3TLS  `yaml:"tls"`
	// Insecure speaks plain http to the endpoint: only for a local one
	// (loopback, a test), since keys and data then cross the wire in clear.
	Insecure bool `yaml:"insecure"`
	// RequestTimeout bounds every call to the object store (for uploads
	// and downloads, each part or range): past it the call fails and a
	// handler answers 503 store_unavailable.
	RequestTimeout time.Duration `yaml:"request_timeout"`
}

// S3TLS verifies the endpoint.
type S3TLS struct {
	// CAFile verifies the endpoint against this CA bundle instead of the
	// system roots.
	CAFile string `yaml:"ca_file"`
}

// Quota holds the quotas of each store kind.
type Quota struct {
	KV    QuotaLimit `yaml:"kv"`
	State QuotaLimit `yaml:"state"`
	Blob  QuotaLimit `yaml:"blob"`
}

// QuotaLimit bounds one store kind for one sandbox. Zero means no limit.
type QuotaLimit struct {
	// Bytes: keys, values and metadata (blob: keys, content, stored
	// headers, and uploads in progress).
	Bytes Size `yaml:"bytes"`
	// Keys: keys (blob: objects).
	Keys int64 `yaml:"keys"`
}

// Size is a number of bytes, written as an integer or with a unit: 512KiB,
// 10MiB, 1GiB, 2TiB (powers of 1024) or kB, MB, GB, TB (powers of 1000).
type Size int64

// ParseSize reads a Size.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || (mult > 1 && n > (1<<62)/mult) {
		return 0, fmt.Errorf("%q is not a size: want bytes, or a number with KiB, MiB, GiB, TiB, kB, MB, GB or TB", s)
	}
	return Size(n * mult), nil
}

// UnmarshalYAML reads a Size; an error is a yaml type error, so that it
// names the field and line like the others.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a size: want bytes, or a number with KiB, MiB, GiB, TiB, kB, MB, GB or TB", n.Line, n.Value)}}
	}
	*z = v
	return nil
}

// Metrics shapes the daemon's metrics.
type Metrics struct {
	// MaxSandboxLabels caps the sandboxes that get a "sandbox" label value
	// of their own; later ones share "_other". A deleted sandbox frees its slot.
	MaxSandboxLabels int `yaml:"max_sandbox_labels"`
	// DeletedSeriesGrace keeps a deleted sandbox's series this long, so that
	// a sandbox shorter than a scrape interval is still seen.
	DeletedSeriesGrace time.Duration `yaml:"deleted_series_grace"`
}

// Deny shapes deny responses.
type Deny struct {
	// Status of a denied HTTP request. Default 403.
	Status int `yaml:"status"`
	// Body replaces the default text body when set (a JSON body is still
	// sent to clients that accept JSON).
	Body string `yaml:"body"`
}

// Listen holds the daemon's listen addresses.
type Listen struct {
	// HTTP is the transparent (TPROXY) listener for intercepted port-80 traffic.
	// It must be a loopback address: TPROXY delivers to it, nobody else should.
	HTTP string `yaml:"http"`
	// HTTPS is the transparent listener for intercepted port-443 traffic
	// (the TLS front: SNI policy, passthrough), on the same loopback address
	// as HTTP. Empty: port 443 is not intercepted and is routed like any
	// other port, QUIC included.
	HTTPS string `yaml:"https"`
	// DNSPort is the port, on all addresses, that captured DNS is redirected to.
	// Queries from anything that is not a sandbox are refused.
	DNSPort int `yaml:"dns_port"`
	// Metrics is the Prometheus /metrics listener; empty disables it.
	Metrics string `yaml:"metrics"`
	// Pprof also serves Go's /debug/pprof/ on the metrics listener.
	Pprof bool `yaml:"pprof"`
	// MaxConnectionsPerSandbox caps the intercepted HTTP connections one
	// sandbox holds open; more are reset at once. 0 means no cap.
	MaxConnectionsPerSandbox int `yaml:"max_connections_per_sandbox"`
	// MaxRequestsPerSecondPerSandbox is the intercepted HTTP requests one
	// sandbox gets served per second (bursts of twice that); beyond it,
	// 429 Too Many Requests. 0 means no limit.
	MaxRequestsPerSecondPerSandbox int `yaml:"max_requests_per_second_per_sandbox"`
	// UpgradeIdleTimeout cuts a switched connection (a WebSocket or other
	// Upgrade, after its 101) when no byte has passed either way for this
	// long. 0 means no idle timeout.
	UpgradeIdleTimeout time.Duration `yaml:"upgrade_idle_timeout"`
}

// TLS names interceptd's CA, which signs the certificates presented for
// intercepted names (docs/https.md).
type TLS struct {
	// CACert and CAKey are an operator's CA (PEM files; the key mode 0600).
	// Both empty: the daemon's own, made on first start in <data_dir>/ca.
	CACert string `yaml:"ca_cert"`
	CAKey  string `yaml:"ca_key"`
}

// CADir is where the daemon keeps its own CA when the config names none.
func (c *Config) CADir() string { return filepath.Join(c.DataDir, "ca") }

// DNS configures the DNS shim.
type DNS struct {
	// Upstreams are the resolvers (host:port) that non-handler names are
	// forwarded to. Empty means the nameservers of the host's /etc/resolv.conf.
	Upstreams []string `yaml:"upstreams"`
	// Timeout bounds one upstream exchange; a failed upstream is a SERVFAIL.
	Timeout time.Duration `yaml:"timeout"`
	// VirtualCIDR is where handler hostnames get their virtual addresses.
	VirtualCIDR string `yaml:"virtual_cidr"`
	// TTL is the TTL, in seconds, of answers for handler hostnames.
	TTL uint32 `yaml:"ttl"`
	// DeniedRcode answers names that policy denies: NXDOMAIN or REFUSED.
	DeniedRcode string `yaml:"denied_rcode"`
	// MaxQPSPerSandbox limits the queries one sandbox gets answered per
	// second (bursts of twice that); beyond it, REFUSED. 0: no limit.
	MaxQPSPerSandbox int `yaml:"max_qps_per_sandbox"`
	// MaxTCPConnectionsPerSandbox caps the DNS-over-TCP connections one
	// sandbox holds open; more are reset at once. 0 means no cap.
	MaxTCPConnectionsPerSandbox int `yaml:"max_tcp_connections_per_sandbox"`
}

// Sandbox configures per-sandbox namespaces.
type Sandbox struct {
	// Pool is the IPv4 prefix sandbox links are carved from, a /30 each.
	Pool string `yaml:"pool"`
	// NetnsPrefix is prepended to a sandbox name to name its namespace in
	// /run/netns; cleanup removes every namespace with this prefix.
	NetnsPrefix string `yaml:"netns_prefix"`
	// InterfacePrefix names the host side of sandbox veth pairs; every
	// interception rule matches it, so it must not be shared with other links.
	InterfacePrefix string `yaml:"interface_prefix"`
	// ResolvConf, when true, writes /etc/netns/<netns>/resolv.conf naming the
	// sandbox gateway, so `ip netns exec` users get a resolver the daemon
	// answers even when the host's resolver is a loopback address.
	ResolvConf *bool `yaml:"resolv_conf"`
}

// Handler binds one hostname to a handler kind. Its other fields belong to
// the kind: they are decoded strictly into the kind's own config struct
// (Spec), which the kinds registry defines.
type Handler struct {
	// Host is the hostname the handler answers for (case-insensitive).
	Host string
	// Kind is the handler kind: one of kinds.Names().
	Kind string
	// HTTPS: the handler answers https:// on port 443 too; the daemon
	// terminates TLS for Host with a certificate from its CA.
	HTTPS bool
	// Spec is the kind's config; nil when the kind is unknown (Validate
	// says so) or when a Handler built in code leaves it to its zero value.
	Spec kinds.Config
}

// Kinds lists the handler kinds this build knows.
func Kinds() []string { return kinds.Names() }

// Config returns the kind's config: Spec, or the kind's zero config when
// Spec is nil; nil when the kind is unknown.
func (h Handler) Config() kinds.Config {
	if h.Spec != nil {
		return h.Spec
	}
	if k, ok := kinds.Lookup(h.Kind); ok {
		return k.NewConfig()
	}
	return nil
}

// PerSandbox reports whether the handler keys its data by sandbox.
func (h Handler) PerSandbox() bool {
	s, ok := h.Config().(kinds.Store)
	return ok && s.PerSandbox()
}

// Space returns the namespace or bucket name, defaults applied; "default"
// for kinds that store nothing.
func (h Handler) Space() string {
	if s, ok := h.Config().(kinds.Store); ok {
		return s.Space()
	}
	return "default"
}

// envelope is the struct a handler entry of kind k decodes into: host and
// kind, then the kind's own fields inline, so that one strict decode names
// an unknown or mistyped field and its line.
func envelope(k kinds.Kind) reflect.Type {
	return reflect.StructOf([]reflect.StructField{
		{Name: "Host", Type: reflect.TypeFor[string](), Tag: `yaml:"host"`},
		{Name: "Kind", Type: reflect.TypeFor[string](), Tag: `yaml:"kind"`},
		{Name: "HTTPS", Type: reflect.TypeFor[bool](), Tag: `yaml:"https,omitempty"`},
		{Name: "Spec", Type: reflect.TypeOf(k.NewConfig()).Elem(), Tag: `yaml:",inline"`},
	})
}

// handlerHead is what every handler entry has, read first to find its
// kind; Rest takes the kind's fields, decoded next.
type handlerHead struct {
	Host  string               `yaml:"host"`
	Kind  string               `yaml:"kind"`
	HTTPS bool                 `yaml:"https"`
	Rest  map[string]yaml.Node `yaml:",inline"`
}

// UnmarshalYAML decodes a handler entry. It takes the older unmarshal
// callback on purpose: that one decodes with the document's decoder, so
// unknown fields stay errors (KnownFields) and lines stay the document's.
func (h *Handler) UnmarshalYAML(unmarshal func(any) error) error {
	var probe handlerHead
	if err := unmarshal(&probe); err != nil {
		return err
	}
	*h = Handler{Host: probe.Host, Kind: probe.Kind, HTTPS: probe.HTTPS}
	k, ok := kinds.Lookup(probe.Kind)
	if !ok {
		return nil // Validate names the kind field
	}
	t := envelope(k)
	v := reflect.New(t)
	if err := unmarshal(v.Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for i, m := range te.Errors {
				te.Errors[i] = strings.ReplaceAll(m, " in type "+t.String(), " in a "+k.Name+" handler")
			}
		}
		return err
	}
	spec := k.NewConfig()
	reflect.ValueOf(spec).Elem().Set(v.Elem().Field(3))
	h.Spec = spec
	return nil
}

// MarshalYAML renders a handler entry as it is written.
func (h Handler) MarshalYAML() (any, error) {
	k, ok := kinds.Lookup(h.Kind)
	if !ok {
		return map[string]string{"host": h.Host, "kind": h.Kind}, nil
	}
	v := reflect.New(envelope(k)).Elem()
	v.Field(0).SetString(h.Host)
	v.Field(1).SetString(h.Kind)
	v.Field(2).SetBool(h.HTTPS)
	v.Field(3).Set(reflect.ValueOf(h.Config()).Elem())
	return v.Interface(), nil
}

// Default returns the embedded default configuration, decoded.
func Default() *Config {
	c, err := Parse("default.yaml", defaultYAML)
	if err != nil {
		panic("embedded default config is invalid: " + err.Error())
	}
	return c
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(path, b)
	if err != nil {
		return nil, err
	}
	c.path = path
	return c, nil
}

// Override makes f's changes to c (serve's flags over the file), and to
// every config Reread makes from c.
func (c *Config) Override(f func(*Config)) {
	f(c)
	c.overrides = f
}

// Reread loads c's file again (a reload), makes c's overrides to it, and
// validates the result.
func (c *Config) Reread() (*Config, error) {
	n, err := Load(c.path)
	if err != nil {
		return nil, err
	}
	if c.overrides != nil {
		n.Override(c.overrides)
		if err := n.Validate(); err != nil {
			return nil, fmt.Errorf("after flags: %w", err)
		}
	}
	return n, nil
}

// Path is the file the config was loaded from ("" for the embedded
// default): what a reload reads again.
func (c *Config) Path() string { return c.path }

// Parse decodes a config document strictly: unknown fields, wrong types and
// duplicate keys are errors naming the field and line. Fields the document
// omits take the embedded defaults. The result is validated.
func Parse(name string, doc []byte) (*Config, error) {
	c := &Config{}
	if !bytes.Equal(doc, defaultYAML) {
		// Start from the defaults so a file only says what it changes.
		c = Default()
	}
	if err := decodeStrict(doc, c); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c.resolveScripts(name)
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

var lineRE = regexp.MustCompile(`line (\d+): `)

// What yaml says of an unknown field and of a value of the wrong kind, and
// how the config says it: the section a Go type is, what a Go type takes.
var (
	unknownRE  = regexp.MustCompile(`field (\S+) not found in type ([\w.]+)`)
	valueRE    = regexp.MustCompile("cannot unmarshal !!(\\w+) `(.*)` into ([\\w.]+)")
	goSections = map[string]string{
		"config.Config": ".", "config.Listen": "listen", "config.DNS": "dns", "config.Sandbox": "sandbox",
		"config.Deny": "deny", "config.Metrics": "metrics", "config.Store": "store", "config.TLS": "tls",
		"config.Quota": "quota", "config.Etcd": "store.etcd", "config.EtcdTLS": "store.etcd.tls", "policy.Policy": "policy", "config.WorkerLimits": "a worker's limits",
	}
	goValues = map[string]string{
		"time.Duration": "a duration (write it with a unit: 2s, 500ms, 1m)",
		"int":           "a whole number",
		"int64":         "a whole number",
		"bool":          "true or false",
		"string":        "text",
	}
)

// decodeStrict decodes doc into out with unknown fields rejected, and adds the
// dotted field path to yaml's "line N: ..." type errors, which name only the
// line and the Go type.
func decodeStrict(doc []byte, out *Config) error {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return err
	}
	if len(root.Content) == 0 {
		return errors.New("empty config document")
	}
	paths := map[int]string{}
	collectPaths(root.Content[0], "", paths)
	out.lines = map[string]int{}
	collectLines(root.Content[0], "", out.lines)
	if v := findKey(root.Content[0], "version"); v == nil {
		return errors.New("field version: missing; this build reads version 1")
	}
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	err := dec.Decode(out)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		if sm := lineRE.FindStringSubmatch(m); sm != nil {
			n, _ := strconv.Atoi(sm[1])
			if p, ok := paths[n]; ok && !strings.Contains(m, "not found in ") {
				m = strings.Replace(m, sm[0], sm[0]+"field "+p+": ", 1)
			} else if u := unknownRE.FindStringSubmatch(m); ok && u != nil && goSections[u[2]] != "" {
				// In the config's words: the field's path and the section
				// it is not one of, not the Go type behind it.
				section := goSections[u[2]]
				if section == "." {
					section = "the top level"
				}
				m = strings.Replace(m, u[0], "field "+p+": unknown field (not found in "+section+")", 1)
			}
		}
		if v := valueRE.FindStringSubmatch(m); v != nil && goValues[v[3]] != "" {
			m = strings.Replace(m, v[0], fmt.Sprintf("%s is not %s", v[2], goValues[v[3]]), 1)
		}
		m = strings.NewReplacer(" in type config.Binding", " in a binding", " into config.Binding", " into a binding").Replace(m)
		if strings.Contains(m, " a binding") {
			m += " (a binding is one of {kv: NS}, {blob: BUCKET}, {durable_object: CLASS}, {secret: NAME}, {var: VALUE})"
		}
		msgs = append(msgs, m)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// collectPaths records, for every scalar value line, the dotted path of the
// field it belongs to (list items as name[i]).
func collectPaths(n *yaml.Node, prefix string, out map[int]string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			if _, seen := out[v.Line]; !seen || v.Kind == yaml.ScalarNode {
				out[v.Line] = p
			}
			collectPaths(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			if c.Kind == yaml.ScalarNode {
				out[c.Line] = p
			}
			collectPaths(c, p, out)
		}
	}
}

// collectLines records the line of every field and list item by its
// dotted path (list items as name[i]).
func collectLines(n *yaml.Node, prefix string, out map[string]int) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			out[p] = k.Line
			collectLines(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			out[p] = c.Line
			collectLines(c, p, out)
		}
	}
}

func findKey(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

var (
	hostRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	prefixRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,5}$`)
	nsPrefRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{0,32}$`)
)

// Validate checks values that decoding cannot: addresses, prefixes, kinds.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("field %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.Version != CurrentVersion {
		bad("version", "%d is not supported; this build reads version %d", c.Version, CurrentVersion)
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if c.AdminSocket == "" {
		bad("admin_socket", "must not be empty")
	}
	if ap, err := netip.ParseAddrPort(c.Listen.HTTP); err != nil {
		bad("listen.http", "%q is not an ip:port (%v)", c.Listen.HTTP, err)
	} else if !ap.Addr().IsLoopback() || !ap.Addr().Is4() {
		bad("listen.http", "%q must be an IPv4 loopback address: only TPROXY should reach it", c.Listen.HTTP)
	}
	if c.Listen.HTTPS != "" {
		if ap, err := netip.ParseAddrPort(c.Listen.HTTPS); err != nil {
			bad("listen.https", "%q is not an ip:port (%v)", c.Listen.HTTPS, err)
		} else if hp, err := netip.ParseAddrPort(c.Listen.HTTP); err == nil && ap.Addr() != hp.Addr() {
			bad("listen.https", "%q must be on listen.http's address (%s): one local route takes both", c.Listen.HTTPS, hp.Addr())
		} else if err == nil && ap.Port() == hp.Port() {
			bad("listen.https", "%q is listen.http's port too: they need one each", c.Listen.HTTPS)
		}
	}
	if c.Listen.MaxConnectionsPerSandbox < 0 {
		bad("listen.max_connections_per_sandbox", "must not be negative")
	}
	if c.Listen.MaxRequestsPerSecondPerSandbox < 0 {
		bad("listen.max_requests_per_second_per_sandbox", "must not be negative")
	}
	if c.Listen.UpgradeIdleTimeout < 0 {
		bad("listen.upgrade_idle_timeout", "must not be negative (0s: no idle timeout)")
	}
	if c.Listen.DNSPort < 1 || c.Listen.DNSPort > 65535 {
		bad("listen.dns_port", "%d is not a port", c.Listen.DNSPort)
	}
	if c.Listen.Metrics != "" {
		if _, err := netip.ParseAddrPort(c.Listen.Metrics); err != nil {
			bad("listen.metrics", "%q is not an ip:port (%v)", c.Listen.Metrics, err)
		}
	}
	for i, u := range c.DNS.Upstreams {
		if _, err := netip.ParseAddrPort(u); err != nil {
			bad(fmt.Sprintf("dns.upstreams[%d]", i), "%q is not an ip:port (%v)", u, err)
		}
	}
	if c.DNS.Timeout <= 0 {
		bad("dns.timeout", "must be positive")
	}
	c.Store.Blobs.validate(func(field, format string, args ...any) {
		bad(field, format+"%s", append(args, c.blobsLine(field))...)
	})
	vp, err := netip.ParsePrefix(c.DNS.VirtualCIDR)
	if err != nil || !vp.Addr().Is4() {
		bad("dns.virtual_cidr", "%q is not an IPv4 prefix", c.DNS.VirtualCIDR)
	}
	pp, err := netip.ParsePrefix(c.Sandbox.Pool)
	if err != nil || !pp.Addr().Is4() || pp.Bits() > 29 {
		bad("sandbox.pool", "%q is not an IPv4 prefix of /29 or larger", c.Sandbox.Pool)
	} else if vp.IsValid() && vp.Overlaps(pp) {
		bad("sandbox.pool", "%s overlaps dns.virtual_cidr %s", pp, vp)
	}
	if !nsPrefRE.MatchString(c.Sandbox.NetnsPrefix) {
		bad("sandbox.netns_prefix", "%q must be at most 32 of [A-Za-z0-9_.-]", c.Sandbox.NetnsPrefix)
	}
	if !prefixRE.MatchString(c.Sandbox.InterfacePrefix) {
		bad("sandbox.interface_prefix", "%q must be 1-6 of [a-z0-9-], starting with a letter", c.Sandbox.InterfacePrefix)
	}
	// Inbound entries one by one, so that each error names its entry's
	// field and line; the rest of the policy as a whole.
	for i, e := range c.Policy.Inbound {
		if _, err := policy.ParseInbound(e); err != nil {
			f := fmt.Sprintf("policy.inbound[%d]", i)
			bad(f, "%v%s", err, c.at(f))
		}
	}
	rest := c.Policy
	rest.Inbound = nil
	if _, err := rest.Compile(); err != nil {
		bad("policy", "%v", err)
	}
	if c.Metrics.DeletedSeriesGrace < 0 {
		bad("metrics.deleted_series_grace", "must not be negative")
	}
	if c.Metrics.MaxSandboxLabels < 0 || c.Metrics.MaxSandboxLabels > 10000 {
		bad("metrics.max_sandbox_labels", "%d: want 0 to 10000", c.Metrics.MaxSandboxLabels)
	}
	for _, q := range []struct {
		kind string
		l    QuotaLimit
	}{{"kv", c.Quota.KV}, {"state", c.Quota.State}, {"blob", c.Quota.Blob}} {
		if q.l.Keys < 0 {
			bad("quota."+q.kind+".keys", "must not be negative")
		}
	}
	if c.Deny.Status < 400 || c.Deny.Status > 599 {
		bad("deny.status", "%d is not a 4xx or 5xx status", c.Deny.Status)
	}
	if c.DNS.MaxQPSPerSandbox < 0 {
		bad("dns.max_qps_per_sandbox", "must not be negative")
	}
	if c.DNS.MaxTCPConnectionsPerSandbox < 0 {
		bad("dns.max_tcp_connections_per_sandbox", "must not be negative")
	}
	if c.DNS.DeniedRcode != "NXDOMAIN" && c.DNS.DeniedRcode != "REFUSED" {
		bad("dns.denied_rcode", "%q: want NXDOMAIN or REFUSED", c.DNS.DeniedRcode)
	}
	seen := map[string]bool{}
	for i, h := range c.Handlers {
		f := fmt.Sprintf("handlers[%d]", i)
		host := policy.NormalizeHost(h.Host)
		switch {
		case host == "*" && !seen["*"]:
			// the catch-all
		case !hostRE.MatchString(host):
			bad(f+".host", "%q is not a hostname", h.Host)
		case seen[host]:
			bad(f+".host", "%q is configured twice", h.Host)
		}
		seen[host] = true
		switch {
		case h.HTTPS && host == "*":
			bad(f+".https", "the catch-all cannot be intercepted: HTTPS is intercepted by name, for a handler's own host")
		case h.HTTPS && c.Listen.HTTPS == "":
			bad(f+".https", "needs listen.https: port 443 is not intercepted without it")
		}
		switch k, ok := kinds.Lookup(h.Kind); {
		case h.Kind == "":
			bad(f+".kind", "missing; one of %s", strings.Join(Kinds(), ", "))
		case !ok:
			bad(f+".kind", "%q is not a handler kind; one of %s", h.Kind, strings.Join(Kinds(), ", "))
		default:
			spec := h.Spec
			if spec == nil {
				spec = k.NewConfig()
			}
			spec.Validate(func(field, format string, args ...any) { bad(f+"."+field, format, args...) })
		}
	}
	if (c.TLS.CACert == "") != (c.TLS.CAKey == "") {
		bad("tls", "ca_cert and ca_key go together: give both, or neither for the daemon's own CA")
	}
	c.validateWorkers(bad)
	c.validateStore(bad)
	if vp.IsValid() && len(c.Handlers) > (1<<(32-vp.Bits()))-2 {
		bad("dns.virtual_cidr", "%s is too small for %d handlers", vp, len(c.Handlers))
	}
	return errors.Join(errs...)
}

// WriteResolvConf reports whether /etc/netns/<netns>/resolv.conf is written.
func (s Sandbox) WriteResolvConf() bool { return s.ResolvConf == nil || *s.ResolvConf }

// at returns " (line N)" for the document's line of a field, or of the
// nearest enclosing one the document has, where Parse knows it.
func (c *Config) at(field string) string {
	for field != "" {
		if l := c.lines[field]; l > 0 {
			return fmt.Sprintf(" (line %d)", l)
		}
		field = field[:max(strings.LastIndexAny(field, ".["), 0)]
	}
	return ""
}

// blobsLine is at, under the name the store.blobs checks use.
func (c *Config) blobsLine(field string) string { return c.at(field) }

// validateStore checks store.backend and, for etcd, store.etcd.
func (c *Config) validateStore(bad func(field, format string, args ...any)) {
	s := c.Store
	switch s.Backend {
	case BackendBolt:
		return
	case BackendEtcd:
	default:
		bad("store.backend", "%q is not a store backend; one of bbolt, etcd%s", s.Backend, c.at("store.backend"))
		return
	}
	e := s.Etcd
	if len(e.Endpoints) == 0 {
		bad("store.etcd.endpoints", "backend etcd needs at least one endpoint%s", c.at("store.etcd.endpoints"))
	}
	tlsFiles := e.TLS.CAFile != "" || e.TLS.CertFile != ""
	for i, ep := range e.Endpoints {
		f := fmt.Sprintf("store.etcd.endpoints[%d]", i)
		u, err := url.Parse(ep)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/"):
			bad(f, "%q is not an etcd client URL: want http://host:port or https://host:port%s", ep, c.at(f))
		case u.Scheme == "http" && tlsFiles:
			bad(f, "%q is plain http, but store.etcd.tls is set: use https://%s", ep, c.at(f))
		}
	}
	if e.Prefix == "" || !strings.HasSuffix(e.Prefix, "/") {
		bad("store.etcd.prefix", "%q must not be empty and must end with /, so that it never shares keys with another prefix%s", e.Prefix, c.at("store.etcd.prefix"))
	}
	if e.DialTimeout <= 0 {
		bad("store.etcd.dial_timeout", "must be positive%s", c.at("store.etcd.dial_timeout"))
	}
	if e.RequestTimeout <= 0 || e.RequestTimeout > time.Minute {
		bad("store.etcd.request_timeout", "%s must be positive and at most 1m: a store call waits this long at worst%s", e.RequestTimeout, c.at("store.etcd.request_timeout"))
	}
	if (e.Username == "") != (e.PasswordFile == "") {
		bad("store.etcd.username", "username and password_file go together: give both, or neither without etcd auth%s", c.at("store.etcd"))
	}
	if (e.TLS.CertFile == "") != (e.TLS.KeyFile == "") {
		bad("store.etcd.tls", "cert_file and key_file go together: give both, or neither without a client certificate%s", c.at("store.etcd.tls"))
	}
	if e.MaxRequestBytes < 256<<10 {
		bad("store.etcd.max_request_bytes", "%d is under 256KiB: values are limited to it less 64KiB%s", e.MaxRequestBytes, c.at("store.etcd.max_request_bytes"))
	}
}

// validate checks store.blobs; the S3 fields only matter, and are only
// checked, when the backend is s3.
func (b StoreBlobs) validate(bad func(field, format string, args ...any)) {
	switch b.Backend {
	case BlobsBolt:
		return
	case BlobsS3:
	default:
		bad("store.blobs.backend", "%q is not a blob backend: want bbolt or s3", b.Backend)
		return
	}
	s := b.S3
	if s.Endpoint == "" {
		bad("store.blobs.s3.endpoint", "missing: store.blobs.backend s3 needs the object store's host:port")
	} else if strings.Contains(s.Endpoint, "://") {
		u, err := url.Parse(s.Endpoint)
		switch {
		case err != nil || u.Host == "" || (u.Path != "" && u.Path != "/"):
			bad("store.blobs.s3.endpoint", "%q is not a host:port or an http(s)://host:port URL", s.Endpoint)
		case u.Scheme == "http" && !s.Insecure:
			bad("store.blobs.s3.endpoint", "%q is plain http: set insecure: true to allow it (local endpoints only)", s.Endpoint)
		case u.Scheme != "http" && u.Scheme != "https":
			bad("store.blobs.s3.endpoint", "%q: the scheme must be http or https", s.Endpoint)
		case u.Scheme == "https" && s.Insecure:
			bad("store.blobs.s3.insecure", "true, but the endpoint %q says https", s.Endpoint)
		}
	} else if _, _, err := net.SplitHostPort(s.Endpoint); err != nil {
		bad("store.blobs.s3.endpoint", "%q is not a host:port (%v)", s.Endpoint, err)
	}
	if !s3BucketRE.MatchString(s.Bucket) {
		bad("store.blobs.s3.bucket", "%q is not an S3 bucket name (3 to 63 of a-z, 0-9, '.', '-')", s.Bucket)
	}
	if strings.HasPrefix(s.Prefix, "/") || (s.Prefix != "" && !strings.HasSuffix(s.Prefix, "/")) {
		// The buckets are the first level under it: "fleet-a" would put
		// them beside the other fleets' names rather than under its own.
		bad("store.blobs.s3.prefix", "%q must end with / and not start with it (fleet-a/)", s.Prefix)
	}
	pair := func(name, file, cred string) {
		switch {
		case file == "" && cred == "":
			bad("store.blobs.s3."+name+"_file", "missing: set %s_file or %s_credential (keys never go in the config)", name, name)
		case file != "" && cred != "":
			bad("store.blobs.s3."+name+"_file", "set one of %s_file and %s_credential, not both", name, name)
		}
	}
	pair("access_key", s.AccessKeyFile, s.AccessKeyCredential)
	pair("secret_key", s.SecretKeyFile, s.SecretKeyCredential)
	if s.Insecure && s.TLS.CAFile != "" {
		bad("store.blobs.s3.tls.ca_file", "insecure: true speaks plain http; a CA file has nothing to verify")
	}
	if s.RequestTimeout <= 0 {
		bad("store.blobs.s3.request_timeout", "must be positive: every call to the object store needs a bound")
	}
}

var s3BucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
