package httpserve

import (
	"context"
	"testing"
)

func TestWhatWhenGoneAsksForRunsOnceTheSandboxIsGoneWhateverTheOrder(t *testing.T) {
	tests := []struct {
		name    string
		steps   func(lc *leanConn, f func()) (stopped bool)
		wantRun bool
	}{
		{"asked, then gone", func(lc *leanConn, f func()) bool { lc.WhenGone(f); lc.gone(); return false }, true},
		{"gone, then asked", func(lc *leanConn, f func()) bool { lc.gone(); lc.WhenGone(f); return false }, true},
		{"asked and stopped, then gone", func(lc *leanConn, f func()) bool {
			lc.WhenGone(f)
			stopped := lc.StopWhenGone()
			lc.gone()
			return stopped
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lc := &leanConn{}
			lc.ctx, lc.cancel = context.WithCancel(context.Background())
			ran := 0
			stopped := tt.steps(lc, func() { ran++ })
			if want := map[bool]int{true: 1, false: 0}[tt.wantRun]; ran != want {
				t.Fatalf("ran %d times, want %d", ran, want)
			}
			if !tt.wantRun && !stopped {
				t.Fatal("StopWhenGone reported that the function had run")
			}
		})
	}
}
