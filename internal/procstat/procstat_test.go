package procstat

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestStatusIsReadInBytesFromItsKilobyteLines(t *testing.T) {
	tests := []struct {
		name            string
		status          string
		wantTotal, want int64
	}{
		{"both lines", "Name:\tx\nVmRSS:\t   2048 kB\nRssAnon:\t    512 kB\nRssFile:\t 1536 kB\n", 2048 << 10, 512 << 10},
		{"no memory lines (a kernel thread)", "Name:\tkthreadd\nState:\tS\n", 0, 0},
		{"a line without a value is skipped", "VmRSS:\nRssAnon:\t4 kB\n", 0, 4 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			total, anon := parseStatus(strings.NewReader(tt.status))
			if total != tt.wantTotal || anon != tt.want {
				t.Errorf("got total %d anon %d, want %d and %d", total, anon, tt.wantTotal, tt.want)
			}
		})
	}
}

func TestTheTestProcessHasResidentMemoryAndAMissingOneIsAnError(t *testing.T) {
	total, anon, err := RSS(os.Getpid())
	if err != nil || total <= 0 || anon <= 0 || anon > total {
		t.Errorf("own RSS: total %d anon %d err %v", total, anon, err)
	}
	if _, _, err := RSS(-1); err == nil {
		t.Error("a process that does not exist read without an error")
	}
}

func TestPeakIsAtLeastWhatWasResidentWhileSampling(t *testing.T) {
	stop := Peak(os.Getpid(), time.Millisecond)
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = 1
	}
	time.Sleep(20 * time.Millisecond)
	now, _, _ := RSS(os.Getpid())
	total, anon := stop()
	if total < now-(1<<20) || anon <= 0 {
		t.Errorf("peak total %d anon %d, but %d was resident while sampling", total, anon, now)
	}
	if t2, _ := stop(); t2 != total {
		t.Errorf("a second stop changed the peak: %d then %d", total, t2)
	}
	_ = buf[len(buf)-1]
}
