package netns

import (
	"errors"
	"strings"
	"testing"
)

func TestAPodsSandboxNameIsValidBoundedAndItsOwn(t *testing.T) {
	long := strings.Repeat("a", 63)
	longPod := strings.Repeat("b", 200) + ".x"
	tests := []struct {
		name    string
		ns, pod string
		want    string // "" for an error
	}{
		{"a short identity is namespace dot pod", "default", "web-0", "default.web-0"},
		{"a pod name with dots keeps them", "prod", "db-0.shard", "prod.db-0.shard"},
		{"exactly 64 characters stays whole", strings.Repeat("n", 10), strings.Repeat("p", 53), strings.Repeat("n", 10) + "." + strings.Repeat("p", 53)},
		{"a longer one is cut and hashed", long, longPod, ""},
		{"an upper-case namespace is not Kubernetes'", "Default", "web-0", ""},
		{"an empty pod name is refused", "default", "", ""},
		{"a pod name with a slash is refused", "default", "../etc", ""},
		{"a namespace with a dot is refused, so the first dot splits", "a.b", "c", ""},
		{"a pod name over 253 characters is refused", "default", strings.Repeat("p", 254), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PodSandboxName(tt.ns, tt.pod)
			if tt.name == "a longer one is cut and hashed" {
				if err != nil || len(got) != 64 || !ValidName(got) || !strings.HasPrefix(got, long[:47]) || got[47] != '_' {
					t.Fatalf("got %q, %v: want 47 characters, _ and 16 hex digits", got, err)
				}
				return
			}
			if tt.want == "" {
				if err == nil || !errors.Is(err, ErrInvalidName) {
					t.Fatalf("got %q, %v; want ErrInvalidName", got, err)
				}
				return
			}
			if err != nil || got != tt.want || !ValidName(got) {
				t.Fatalf("got %q, %v; want %q, a valid sandbox name", got, err, tt.want)
			}
		})
	}
}

func TestTwoLongPodIdentitiesThatShareTheirFirstCharactersGetTwoNames(t *testing.T) {
	ns := strings.Repeat("a", 40)
	a, err1 := PodSandboxName(ns, strings.Repeat("b", 60)+"-0")
	b, err2 := PodSandboxName(ns, strings.Repeat("b", 60)+"-1")
	if err1 != nil || err2 != nil || a == b {
		t.Fatalf("%q and %q (%v, %v): two pods, one name", a, b, err1, err2)
	}
	// The same pod gets the same name on every host.
	if again, _ := PodSandboxName(ns, strings.Repeat("b", 60)+"-0"); again != a {
		t.Errorf("the name is not stable: %q then %q", a, again)
	}
}
