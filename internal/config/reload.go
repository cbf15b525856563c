package config

import (
	"reflect"
	"sort"
	"strings"
)

// liveFields are the fields a running daemon takes on a reload (SIGHUP,
// `interceptd reload`), by the dotted names the file uses. Every other
// field needs a restart: the listeners, addressing and namespaces, the CA,
// the store's place, the label cap, and the workers' definitions (a
// worker's script and secrets reload live with `interceptd worker reload`
// and on every reload).
var liveFields = map[string]bool{
	"handlers": true, "policy": true, "deny": true,
	"dns.upstreams": true, "dns.timeout": true, "dns.ttl": true, "dns.denied_rcode": true,
	"dns.max_qps_per_sandbox": true, "dns.max_tcp_connections_per_sandbox": true,
	"listen.max_connections_per_sandbox": true, "listen.max_requests_per_second_per_sandbox": true,
	"metrics.deleted_series_grace": true,
	"quota.kv":                     true, "quota.state": true, "quota.blob": true,
	"store.min_free_bytes": true,
	"worker_heap_limit":    true,
}

// sections are the fields compared one level down, so that a change names
// the field (listen.http) rather than the section.
var sections = map[string]bool{"listen": true, "tls": true, "dns": true, "sandbox": true, "metrics": true, "store": true, "quota": true}

// Changes compares the running config with the one a reload read, field
// by field, and sorts the fields that differ into those the daemon takes
// live and those that need a restart (sorted, dotted names).
func Changes(running, next *Config) (live, restart []string) {
	for _, f := range diff(reflect.ValueOf(*running), reflect.ValueOf(*next), "") {
		if liveFields[f] {
			live = append(live, f)
		} else {
			restart = append(restart, f)
		}
	}
	sort.Strings(live)
	sort.Strings(restart)
	return live, restart
}

// IsLive tells whether a reload takes the field (a dotted name) live.
func IsLive(field string) bool { return liveFields[field] }

func diff(a, b reflect.Value, prefix string) []string {
	var out []string
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		if prefix != "" {
			name = prefix + "." + name
		}
		av, bv := a.Field(i), b.Field(i)
		if prefix == "" && sections[name] && av.Kind() == reflect.Struct {
			out = append(out, diff(av, bv, name)...)
			continue
		}
		if !reflect.DeepEqual(av.Interface(), bv.Interface()) {
			out = append(out, name)
		}
	}
	return out
}
