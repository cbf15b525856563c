package netns

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestASandboxsWorkerIsCheckedRecordedAndNamedByCaller(t *testing.T) {
	e := newFakeEnv(t, "10.213.0.0/27", nil)
	configured := map[string]bool{"app": true, "api": true}
	e.m.cfg.Workers = func(name string) bool { return configured[name] }
	e.m.cfg.DefaultWorker = "app"
	var announced []string
	e.m.cfg.OnPolicy = func(sb Sandbox) { announced = append(announced, sb.Name+"="+sb.Worker) }
	e.setup(t)
	none, api, nope := "", "api", "nope"

	a, err := e.m.Create("a", nil)
	if err != nil || a.Worker != "app" {
		t.Fatalf("a sandbox created without a worker named: %q %v, want the default app", a.Worker, err)
	}
	b, err := e.m.CreateSpec("b", Spec{Worker: &none})
	if err != nil || b.Worker != "" {
		t.Fatalf("a sandbox created with no worker: %q %v", b.Worker, err)
	}
	c, err := e.m.AttachSpec("c", e.m.cfg.NetnsDir, "eth0", Spec{Worker: &api})
	if err != nil || c.Worker != "api" {
		t.Fatalf("an attached sandbox with worker api: %q %v", c.Worker, err)
	}
	before := e.leftovers(t)
	for _, do := range []func() error{
		func() error { _, err := e.m.CreateSpec("d", Spec{Worker: &nope}); return err },
		func() error { _, err := e.m.AttachSpec("d", e.m.cfg.NetnsDir, "eth0", Spec{Worker: &nope}); return err },
	} {
		if err := do(); !errors.Is(err, ErrUnknownWorker) || !strings.Contains(err.Error(), `"nope"`) {
			t.Errorf("an unknown worker: %v, want ErrUnknownWorker naming it", err)
		}
	}
	if after := e.leftovers(t); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("a refused create left %v, had %v", after, before)
	}

	for _, sb := range []Sandbox{a, b, c} {
		if caller, ok := e.m.Caller(sb.Addr); !ok || caller.Worker != sb.Worker {
			t.Errorf("Caller(%s) = %+v, want worker %q", sb.Name, caller, sb.Worker)
		}
		var rec Sandbox
		if err := json.Unmarshal(e.recs.m[sb.Name], &rec); err != nil || rec.Worker != sb.Worker {
			t.Errorf("record of %s: worker %q %v, want %q", sb.Name, rec.Worker, err, sb.Worker)
		}
	}

	announced = nil
	if sb, err := e.m.SetWorker("b", "api"); err != nil || sb.Worker != "api" {
		t.Fatalf("SetWorker(b, api) = %+v, %v", sb, err)
	}
	if caller, _ := e.m.Caller(b.Addr); caller.Worker != "api" {
		t.Errorf("Caller after SetWorker: %+v", caller)
	}
	if _, err := e.m.SetWorker("a", ""); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.recs.m["a"]), `"worker"`) {
		t.Errorf("a cleared worker is still recorded: %s", e.recs.m["a"])
	}
	if strings.Join(announced, " ") != "b=api a=" {
		t.Errorf("announced %v, want each change once", announced)
	}
	tests := []struct {
		name, sandbox, worker string
		wantErr               error
	}{
		{"an unknown worker is refused", "b", "nope", ErrUnknownWorker},
		{"an unknown sandbox", "none", "app", ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.m.SetWorker(tt.sandbox, tt.worker); !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
			if got, _ := e.m.Get("b"); got.Worker != "api" {
				t.Errorf("a refused change is in force: %q", got.Worker)
			}
		})
	}
	e.recs.failOn = errors.New("disk full")
	if _, err := e.m.SetWorker("b", "app"); err == nil {
		t.Error("a worker that cannot be recorded was set")
	}
	e.recs.failOn = nil
	if got, _ := e.m.Get("b"); got.Worker != "api" {
		t.Errorf("a worker that could not be recorded is in force: %q", got.Worker)
	}

	t.Run("a restart keeps each sandbox's worker, one the config lost too", func(t *testing.T) {
		delete(configured, "api")
		cfg := e.m.cfg
		cfg.OnPolicy = nil
		m2, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer m2.Close()
		if err := m2.adopt(); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{"a": "", "b": "api", "c": "api"} {
			sb, ok := m2.Get(name)
			if !ok {
				t.Fatalf("%s was not re-adopted", name)
			}
			if caller, _ := m2.Caller(sb.Addr); sb.Worker != want || caller.Worker != want {
				t.Errorf("%s after a restart: worker %q, caller %q; want %q", name, sb.Worker, caller.Worker, want)
			}
		}
	})
}
