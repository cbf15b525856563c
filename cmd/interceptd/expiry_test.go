package main

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/prometheus/client_golang/prometheus"
)

// expiryWorld is a store, its kv and state handlers, and the admin API
// serving them on a socket, as `interceptd serve` wires them.
type expiryWorld struct {
	db          *store.DB
	kv, state   *handlers.KV
	sock        string
	client      *admin.Client
	kvSpace     *store.KV
	stateSpace  *store.KV
	sandboxName string
}

func newExpiryWorld(t *testing.T) *expiryWorld {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w := &expiryWorld{db: db, sandboxName: "sb1", sock: filepath.Join(dir, "admin.sock")}
	w.kv = &handlers.KV{Store: backend.Bolt(db), Kind: store.KindKV, Namespace: "kv"}
	w.state = &handlers.KV{Store: backend.Bolt(db), Kind: store.KindState, Namespace: "state", PerSandbox: true, Transactions: true}
	w.kvSpace = db.Keys(store.KindKV, "kv", store.ScopeShared, store.Limits{})
	w.stateSpace = db.Keys(store.KindState, "state", store.SandboxScope(w.sandboxName), store.Limits{})
	srv, err := admin.Listen(w.sock, admin.Backend{
		Handlers: []admin.HandlerInfo{
			{Host: "my.kv", Kind: "kv", Space: "kv", Handler: w.kv},
			{Host: "state.do", Kind: "state", Space: "state", PerSandbox: true, Handler: w.state},
		},
		Namespace: func(ns string) router.Handler {
			return &handlers.KV{Store: backend.Bolt(db), Kind: store.KindKV, Namespace: ns}
		},
	}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	w.client = admin.NewClient(w.sock)
	return w
}

// verdict is what a write path answered: accepted, or refused with a
// status and message.
type verdict struct {
	accepted bool
	status   int // of a refusal; 0 for the CLI, which has an exit code
	message  string
}

// serve runs a request through a handler as a sandbox's would reach it.
func serve(h router.Handler, method, target, body string, sandbox string) verdict {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if err := h.ServeHTTP(rec, r, router.Env{Sandbox: sandbox}); err != nil {
		router.WriteError(rec, err)
	}
	return httpVerdict(rec.Code, rec.Body.String())
}

func httpVerdict(code int, body string) verdict {
	if code/100 == 2 {
		return verdict{accepted: true}
	}
	return verdict{status: code, message: body}
}

// query is the ttl and expiration as a PUT's query carries them.
func query(ttl, exp string) url.Values {
	q := url.Values{}
	if ttl != "" {
		q.Set("ttl", ttl)
	}
	if exp != "" {
		q.Set("expiration", exp)
	}
	return q
}

// txnBody is a transaction writing key with ttl and expiration as JSON
// numbers, written as given.
func txnBody(key, ttl, exp string) string {
	b := `{"writes":[{"key":"` + key + `","value":"v"`
	if ttl != "" {
		b += `,"ttl":` + ttl
	}
	if exp != "" {
		b += `,"expiration":` + exp
	}
	return b + `}]}`
}

func TestEveryWritePathJudgesTTLsAndExpirationsAlike(t *testing.T) {
	w := newExpiryWorld(t)
	now := time.Now().Unix()
	inAnHour := strconv.FormatInt(now+3600, 10)
	type path struct {
		name  string
		space *store.KV
		write func(key, ttl, exp string) verdict
	}
	admitted := func(resp *http.Response, err error) verdict {
		if err != nil {
			t.Fatalf("admin API: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return httpVerdict(resp.StatusCode, string(b))
	}
	cli := func(args ...string) verdict {
		code, stderr := capture(t, append(args, "--admin-socket", w.sock)...)
		if code == 0 {
			return verdict{accepted: true}
		}
		return verdict{message: stderr}
	}
	cliFlags := func(ttl, exp string) []string {
		var f []string
		if ttl != "" {
			f = append(f, "--ttl", ttl)
		}
		if exp != "" {
			f = append(f, "--expiration", exp)
		}
		return f
	}
	paths := []path{
		{"a sandbox's PUT on kv", w.kvSpace, func(key, ttl, exp string) verdict {
			return serve(w.kv, http.MethodPut, "/"+key+"?"+query(ttl, exp).Encode(), "v", "")
		}},
		{"a sandbox's PUT on state", w.stateSpace, func(key, ttl, exp string) verdict {
			return serve(w.state, http.MethodPut, "/"+key+"?"+query(ttl, exp).Encode(), "v", w.sandboxName)
		}},
		{"a sandbox's state transaction", w.stateSpace, func(key, ttl, exp string) verdict {
			return serve(w.state, http.MethodPost, "/", txnBody(key, ttl, exp), w.sandboxName)
		}},
		{"the admin API on a kv namespace", w.kvSpace, func(key, ttl, exp string) verdict {
			return admitted(w.client.Namespace(http.MethodPut, "kv", key, query(ttl, exp), strings.NewReader("v"), nil))
		}},
		{"the admin API on a state handler", w.stateSpace, func(key, ttl, exp string) verdict {
			return admitted(w.client.Handler(http.MethodPut, "state.do", key, w.sandboxName, query(ttl, exp), strings.NewReader("v"), nil))
		}},
		{"the admin API running a transaction", w.stateSpace, func(key, ttl, exp string) verdict {
			return admitted(w.client.Handler(http.MethodPost, "state.do", "", w.sandboxName, nil, strings.NewReader(txnBody(key, ttl, exp)), nil))
		}},
		{"the CLI's kv put", w.kvSpace, func(key, ttl, exp string) verdict {
			return cli(append([]string{"kv", "put", "--host", "my.kv", key, "v"}, cliFlags(ttl, exp)...)...)
		}},
		{"the CLI's state put", w.stateSpace, func(key, ttl, exp string) verdict {
			return cli(append([]string{"state", "put", w.sandboxName, key, "v", "--host", "state.do", "--create"}, cliFlags(ttl, exp)...)...)
		}},
	}
	tests := []struct {
		name     string
		ttl, exp string
		refused  string // a part of the refusal; "" for accepted
		// wantTTL or wantExp is what an accepted write stores.
		wantTTL int64
		wantExp int64
	}{
		{"a ttl of a minute expires a minute from now", "60", "", "", 60, 0},
		{"the longest ttl, 100 years, is stored", "3153600000", "", "", 3153600000, 0},
		{"an expiration an hour ahead is stored to the second", "", inAnHour, "", 0, now + 3600},
		{"an expiration at the store's limit is stored to the second", "", "9223372036", "", 0, 9223372036},
		{"a ttl of 0 is refused with the minimum", "0", "", "at least 1", 0, 0},
		{"a negative ttl is refused with the minimum", "-5", "", "at least 1", 0, 0},
		{"a fractional ttl is refused", "1.5", "", "whole seconds", 0, 0},
		{"a ttl over the cap is refused naming the cap", "4000000000", "", "at most 3153600000", 0, 0},
		{"a ttl that overflows a duration is refused naming the cap", "10000000000", "", "at most 3153600000", 0, 0},
		{"a ttl past int64 is refused naming the cap", "99999999999999999999", "", "at most 3153600000", 0, 0},
		{"an expiration in the past is refused", "", "1000", "in the past", 0, 0},
		{"an expiration of 0 is refused", "", "0", "in the past", 0, 0},
		{"a negative expiration is refused", "", "-5", "in the past", 0, 0},
		{"a fractional expiration is refused", "", inAnHour + ".5", "whole seconds", 0, 0},
		{"an expiration a second past the limit is refused naming it", "", "9223372037", "after 9223372036", 0, 0},
		{"an expiration in 2286 is refused naming the limit", "", "10000000000", "after 9223372036", 0, 0},
		{"an expiration past int64 is refused naming the limit", "", "99999999999999999999", "after 9223372036", 0, 0},
		{"ttl and expiration together are refused", "60", inAnHour, "not both", 0, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for j, p := range paths {
				key := "k" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
				before := time.Now()
				v := p.write(key, tt.ttl, tt.exp)
				after := time.Now()
				e, err := p.space.Get(key)
				if tt.refused != "" {
					if v.accepted || (v.status != 0 && v.status != http.StatusBadRequest) || !strings.Contains(v.message, tt.refused) {
						t.Errorf("%s: %+v, want a 400 saying %q", p.name, v, tt.refused)
					}
					if !errors.Is(err, store.ErrNotFound) {
						t.Errorf("%s: a refused write stored %q (expires %v)", p.name, key, e.Expires)
					}
					continue
				}
				if !v.accepted {
					t.Errorf("%s: refused %+v", p.name, v)
					continue
				}
				if err != nil {
					t.Errorf("%s: accepted, then reads %v", p.name, err)
					continue
				}
				if tt.wantExp != 0 && !e.Expires.Equal(time.Unix(tt.wantExp, 0)) {
					t.Errorf("%s: expires %v (%d), want %d", p.name, e.Expires, e.Expires.Unix(), tt.wantExp)
				}
				d := time.Duration(tt.wantTTL) * time.Second
				if tt.wantTTL != 0 && (e.Expires.Before(before.Add(d)) || e.Expires.After(after.Add(d))) {
					t.Errorf("%s: expires %v, want %v after %v", p.name, e.Expires, d, before)
				}
			}
		})
	}
}

func TestTheCLIRefusesAnExpiryOnABlob(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing-here.sock")
	// Refused before the daemon is asked: a blob has no expiry to set, and
	// the flag used to be dropped without a word. blob put has no --ttl:
	// a usage error that names the commands that have one.
	code, stderr := capture(t, "blob", "put", "--host", "my.r2", "--admin-socket", missing, "--ttl", "60", "k", "-")
	if code != 2 || !strings.Contains(stderr, "--ttl goes with kv put or state put, not blob put") {
		t.Errorf("blob put --ttl 60: exit %d %q, want exit 2 saying it applies to kv and state", code, stderr)
	}
}
