package admin

import (
	"strings"
	"testing"
)

func TestASandboxsWorkerIsSetThroughTheAPI(t *testing.T) {
	f := newAPI(t)
	f.sb.Workers, f.sb.DefaultWorker = []string{"app", "api"}, "app"
	none, api, nope := "", "api", "nope"
	tests := []struct {
		name       string
		req        CreateRequest
		wantStatus int
		wantErr    string
		wantWorker string
	}{
		{"without a worker it gets the default", CreateRequest{Name: "a"}, 0, "", "app"},
		{"an empty worker is none", CreateRequest{Name: "b", Worker: &none}, 0, "", ""},
		{"a worker by name", CreateRequest{Name: "c", Worker: &api}, 0, "", "api"},
		{"an attached sandbox with a worker", CreateRequest{Name: "d", NetnsPath: "/var/run/netns/cni-1", Interface: "eth0", Worker: &api}, 0, "", "api"},
		{"an unknown worker is a 400 naming it", CreateRequest{Name: "e", Worker: &nope}, 400, `unknown worker "nope"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb, err := f.c.CreateWith(tt.req)
			if got := statusOfErr(t, err); got != tt.wantStatus || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("status %d err %v, want %d %q", got, err, tt.wantStatus, tt.wantErr)
			}
			if err == nil && sb.Worker != tt.wantWorker {
				t.Errorf("worker %q, want %q", sb.Worker, tt.wantWorker)
			}
		})
	}
	if _, ok := f.sb.Get("e"); ok {
		t.Error("a sandbox with an unknown worker was created")
	}

	changes := []struct {
		name, sandbox, worker string
		wantStatus            int
		wantErr               string
		wantWorker            string
	}{
		{"a worker is given", "b", "api", 0, "", "api"},
		{"a worker is cleared", "a", "", 0, "", ""},
		{"an unknown worker is a 400 naming it and changes nothing", "c", "nope", 400, `"nope"`, "api"},
		{"an unknown sandbox is a 404", "zz", "app", 404, "no such sandbox", ""},
	}
	for _, tt := range changes {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.c.SetWorker(tt.sandbox, tt.worker)
			if got := statusOfErr(t, err); got != tt.wantStatus || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("status %d err %v, want %d %q", got, err, tt.wantStatus, tt.wantErr)
			}
			if sb, ok := f.sb.Get(tt.sandbox); ok && sb.Worker != tt.wantWorker {
				t.Errorf("worker %q, want %q", sb.Worker, tt.wantWorker)
			}
		})
	}
	list, err := f.c.List()
	if err != nil {
		t.Fatal(err)
	}
	workers := map[string]string{}
	for _, sb := range list {
		workers[sb.Name] = sb.Worker
	}
	if workers["b"] != "api" || workers["a"] != "" || workers["c"] != "api" {
		t.Errorf("the list shows workers %v", workers)
	}
	resp, err := rawAdmin(f, "PUT", "/v1/sandboxes/b/worker", `{"workr": "app"}`)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(resp); resp.StatusCode != 400 || !strings.Contains(body, "workr") {
		t.Errorf("an unknown field: %d %s", resp.StatusCode, body)
	}
}
