package precond

import (
	"strconv"
	"strings"
)

// RangeResult is what a GET's Range field asks of a representation.
type RangeResult int

const (
	// Whole: no Range, or one to ignore: send the whole representation.
	Whole RangeResult = iota
	// Partial: send the satisfiable ranges (Spec).
	Partial
	// Unsatisfiable: answer 416 with Content-Range: bytes */<size>.
	Unsatisfiable
)

// Range decides a GET's Range field (RFC 9110 §14) against a representation
// of size bytes. For Partial, spec is the field rewritten to hold only the
// satisfiable ranges, in canonical form ("bytes=0-1,-5"), for
// net/http.ServeContent to serve; for Unsatisfiable, reason says why.
//
//   - A unit other than bytes (compared without case) is ignored (§14.2):
//     the whole representation.
//   - An empty representation ignores ranges: no byte range of it can be
//     written in a Content-Range, and a server may always ignore Range.
//   - A malformed bytes set (last-pos below first-pos, not a number) is
//     rejected with 416, as net/http does (§14.2 lets a server ignore or
//     reject it).
//   - A member is satisfiable when it is an int-range whose first-pos is
//     below size or a suffix-range of non-zero length (§14.1.1): bytes=-0
//     never is. Unsatisfiable members of a set are dropped; when none is
//     left the answer is 416.
func Range(field string, size int64) (res RangeResult, spec, reason string) {
	unit, set, ok := strings.Cut(field, "=")
	if field == "" || !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") || size == 0 {
		return Whole, "", ""
	}
	var out []string
	members := 0
	for _, m := range strings.Split(set, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		members++
		first, last, ok := strings.Cut(m, "-")
		if !ok {
			return Unsatisfiable, "", "malformed range"
		}
		if first == "" {
			n, ok := number(last)
			if !ok {
				return Unsatisfiable, "", "malformed range"
			}
			if n > 0 {
				out = append(out, "-"+strconv.FormatInt(min(n, size), 10))
			}
			continue
		}
		f, ok := number(first)
		if !ok {
			return Unsatisfiable, "", "malformed range"
		}
		l := size - 1
		if last != "" {
			if l, ok = number(last); !ok || l < f {
				return Unsatisfiable, "", "malformed range"
			}
		}
		if f < size {
			out = append(out, strconv.FormatInt(f, 10)+"-"+strconv.FormatInt(min(l, size-1), 10))
		}
	}
	if members == 0 {
		return Unsatisfiable, "", "malformed range"
	}
	if len(out) == 0 {
		return Unsatisfiable, "", "no range of the set overlaps the object"
	}
	return Partial, "bytes=" + strings.Join(out, ","), ""
}

// number parses 1*DIGIT.
func number(s string) (int64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
