package handlers

import (
	"testing"

	"github.com/interceptd/interceptd/router"
)

func TestOnlyTheHandlersThatCarryOrRefuseEverythingAnswerUpgrades(t *testing.T) {
	tests := []struct {
		name    string
		h       router.Handler
		carries bool
	}{
		{"the forwarder carries upgrades", &Forward{}, true},
		{"the proxy carries upgrades", &Proxy{}, true},
		{"deny denies them as any request", &Deny{}, true},
		{"kv cannot switch protocols", &KV{}, false},
		{"blob cannot switch protocols", &Blob{}, false},
		{"respond cannot switch protocols", &Respond{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, ok := tt.h.(router.UpgradeCarrier)
			if got := ok && u.CarriesUpgrades(); got != tt.carries {
				t.Errorf("carries upgrades: %v, want %v", got, tt.carries)
			}
		})
	}
}
