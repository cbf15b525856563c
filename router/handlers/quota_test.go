package handlers

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// serveAs answers one request with h as env's sandbox (or operator).
func serveAs(h router.Handler, env router.Env, method, path, body string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if err := h.ServeHTTP(w, r, env); err != nil {
		router.WriteError(w, err)
	}
	return w
}

func TestAWriteOverQuotaIs507NamingTheKindAndLimitAndOperatorsAreNotCharged(t *testing.T) {
	db, err := store.Open(t.TempDir(), &store.Options{Quotas: store.Amounts{
		KV: store.Amount{Bytes: 10}, State: store.Amount{Keys: 1}, Blob: store.Amount{Bytes: 10},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l := store.Limits{}.WithDefaults()
	tests := []struct {
		kind     string
		h        router.Handler
		method   string
		path     string
		body     string
		wantText string // in the reason
	}{
		{"kv", &KV{Store: backend.Bolt(db), Kind: store.KindKV, Namespace: "default", Limits: l}, http.MethodPut, "/k", "eleven byte", "kv bytes"},
		{"state", &KV{Store: backend.Bolt(db), Kind: store.KindState, Namespace: "default", PerSandbox: true, Transactions: true, Limits: l}, http.MethodPost, "/",
			`{"writes":[{"key":"a","value":"1"},{"key":"b","value":"2"}]}`, "state keys"},
		{"blob", &Blob{Store: backend.Bolt(db), Bucket: "default", Limits: l}, http.MethodPut, "/o", "eleven byte", "blob bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.kind+": a sandbox gets 507 quota_exceeded", func(t *testing.T) {
			w := serveAs(tt.h, router.Env{Sandbox: "s"}, tt.method, tt.path, tt.body)
			reason := w.Header().Get("X-Interceptd-Error")
			if w.Code != http.StatusInsufficientStorage || !strings.HasPrefix(reason, "quota_exceeded") || !strings.Contains(reason, tt.wantText) {
				t.Errorf("got %d %q, want 507 quota_exceeded naming %q", w.Code, reason, tt.wantText)
			}
		})
		t.Run(tt.kind+": the operator acting as that sandbox is not charged", func(t *testing.T) {
			if w := serveAs(tt.h, router.Env{Sandbox: "s", Operator: true}, tt.method, tt.path, tt.body); w.Code >= 300 {
				t.Errorf("got %d %s", w.Code, w.Body)
			}
		})
	}
	if u, _ := db.Usage("s"); u != (store.Amounts{}) {
		t.Errorf("usage of s: %+v, want nothing", u)
	}
}
