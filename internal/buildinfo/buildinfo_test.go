package buildinfo

import "testing"

func TestTheVersionIsTheOneThisBuildWasLinkedWith(t *testing.T) {
	if got := Version(); got != version || got == "" {
		t.Errorf("Version() = %q, want the linked version %q", got, version)
	}
}
