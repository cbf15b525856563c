package e2e

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// curlRun is what curlTimed reports of one curl run.
type curlRun struct {
	Out    string        // what curl printed (stdout and stderr)
	Exit   int           // its exit code: 7 is "could not connect", 28 a timeout
	Status string        // the HTTP status ("000" without one)
	Took   time.Duration // curl's own time_total
}

// curlTimed runs curl in sb with args (which must not set -w) and returns
// what it printed, its exit code, the HTTP status and its own measure of
// the transfer (time_total). A bound on that leaves out `ip netns exec`
// and curl starting up, which a busy machine can stretch past any fixed
// figure; a refusal that comes "at once" is a few milliseconds of it.
func (e *Env) curlTimed(sb Sandbox, args ...string) curlRun {
	e.t.Helper()
	const mark = "\n--curl "
	out, code := e.In(sb, append([]string{"curl", "-sS", "-w", mark + "%{http_code} %{time_total}\n"}, args...)...)
	i := strings.LastIndex(out, mark)
	if i < 0 {
		e.t.Fatalf("curl %v printed no timing (exit %d):\n%s", args, code, out)
	}
	line, rest, _ := strings.Cut(out[i+len(mark):], "\n")
	status, secs, _ := strings.Cut(line, " ")
	s, err := strconv.ParseFloat(secs, 64)
	if err != nil {
		e.t.Fatalf("curl %v printed the timing %q: %v", args, line, err)
	}
	return curlRun{Out: out[:i] + rest, Exit: code, Status: status, Took: time.Duration(s * float64(time.Second))}
}

// atOnce bounds curl's own time for an answer or a refusal that should
// come at once: generous, since even curl's clock stretches on a busy
// machine, yet well below the -m the tests give curl (a dropped
// connection would wait that long and exit 28).
const atOnce = 2 * time.Second

// digAtOnce bounds the wall-clock time (`ip netns exec` and dig starting
// up included: dig prints no time of its own when it gets no answer) of a
// dig refused at once; the dig runs in the tests give +time=10, which a
// dropped query would wait out.
const digAtOnce = 5 * time.Second

// waitNoBlobGarbage waits (10 s at most) until `interceptd store` reports
// no chunk set waiting to be reclaimed: the collector has run, which a
// fixed sleep only hopes for.
func (e *Env) waitNoBlobGarbage(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _, _ := e.CLI("store")
		var st struct {
			Garbage *int `json:"blob_garbage"`
		}
		if err := json.Unmarshal([]byte(out), &st); err == nil && st.Garbage != nil && *st.Garbage == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("chunks still waiting to be reclaimed after 10 s: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// queryTime finds dig's own measure of a lookup ("Query time: 3 msec"),
// which +stats prints even beside +noall.
var queryTime = regexp.MustCompile(`Query time: (\d+) msec`)
