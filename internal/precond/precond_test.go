package precond

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"
	"time"
)

func TestEntityTagListsParseTheSameForEveryMethod(t *testing.T) {
	cur := Validators{Exists: true, ETag: "abc"}
	tests := []struct {
		name        string
		field       []string
		strong      bool // If-Match's reading
		weak        bool // If-None-Match's reading
		wantPresent bool
	}{
		{"a strong tag", []string{`"abc"`}, true, true, true},
		{"a weak tag matches only the weak comparison", []string{`W/"abc"`}, false, true, true},
		{"an unquoted tag is malformed and matches nothing", []string{`abc`}, false, false, true},
		{"a tag missing its closing quote is malformed", []string{`"abc`}, false, false, true},
		{"a lowercase weak prefix is malformed", []string{`w/"abc"`}, false, false, true},
		{"a stray token after a tag is malformed", []string{`"abc" x`}, false, false, true},
		{"a malformed member spoils the whole list", []string{`"abc", xyz`}, false, false, true},
		{"* matches an existing representation", []string{`*`}, true, true, true},
		{"* among tags is malformed", []string{`"x", *`}, false, false, true},
		{"a list holding the tag", []string{`"x", "abc"`}, true, true, true},
		{"a list without spaces", []string{`"x","abc"`}, true, true, true},
		{"a list over two field lines", []string{`"x"`, `"abc"`}, true, true, true},
		{"a tag may hold a comma", []string{`"a,bc", "x"`}, false, false, true},
		{"another tag", []string{`"x"`}, false, false, true},
		{"an empty tag is a tag", []string{`""`}, false, false, true},
		{"an empty field is absent", []string{""}, false, false, false},
		{"no field is absent", nil, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := parseTags(tt.field)
			if l.present != tt.wantPresent || l.matches(cur, true) != tt.strong || l.matches(cur, false) != tt.weak {
				t.Errorf("%q: present %v strong %v weak %v, want %v %v %v", tt.field, l.present, l.matches(cur, true), l.matches(cur, false), tt.wantPresent, tt.strong, tt.weak)
			}
			if l.matches(Validators{}, false) {
				t.Errorf("%q matches a missing representation", tt.field)
			}
		})
	}
}

func TestPreconditionsAreEvaluatedInRFC9110Order(t *testing.T) {
	lm := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	cur := Validators{Exists: true, ETag: "abc", LastModified: lm.Add(400 * time.Millisecond)}
	before, at, after := lm.Add(-time.Second).Format(http.TimeFormat), lm.Format(http.TimeFormat), lm.Add(time.Second).Format(http.TimeFormat)
	tests := []struct {
		name      string
		method    string
		h         http.Header
		missing   bool
		want      Result
		wantField string
	}{
		{"no preconditions proceed", "PUT", http.Header{}, false, Proceed, ""},
		{"a failing If-Match fails", "PUT", http.Header{"If-Match": {`"x"`}}, false, Failed, "If-Match"},
		{"If-Match fails on a missing representation", "PUT", http.Header{"If-Match": {`*`}}, true, Failed, "If-Match"},
		{"If-Match that holds makes If-Unmodified-Since ignored", "PUT", http.Header{"If-Match": {`"abc"`}, "If-Unmodified-Since": {before}}, false, Proceed, ""},
		{"If-Unmodified-Since before the change fails", "DELETE", http.Header{"If-Unmodified-Since": {before}}, false, Failed, "If-Unmodified-Since"},
		{"If-Unmodified-Since at the change holds (one-second resolution)", "PUT", http.Header{"If-Unmodified-Since": {at}}, false, Proceed, ""},
		{"If-Unmodified-Since is ignored without a representation", "PUT", http.Header{"If-Unmodified-Since": {before}}, true, Proceed, ""},
		{"If-Unmodified-Since given twice is ignored", "PUT", http.Header{"If-Unmodified-Since": {before, before}}, false, Proceed, ""},
		{"If-Unmodified-Since fails before If-None-Match is asked", "GET", http.Header{"If-Unmodified-Since": {before}, "If-None-Match": {`"abc"`}}, false, Failed, "If-Unmodified-Since"},
		{"a matching If-None-Match is a 304 for GET", "GET", http.Header{"If-None-Match": {`W/"abc"`}}, false, NotModified, "If-None-Match"},
		{"a matching If-None-Match is a 412 for PUT", "PUT", http.Header{"If-None-Match": {`W/"abc"`}}, false, Failed, "If-None-Match"},
		{"If-None-Match * holds without a representation", "PUT", http.Header{"If-None-Match": {`*`}}, true, Proceed, ""},
		{"If-None-Match present makes If-Modified-Since ignored", "GET", http.Header{"If-None-Match": {`"x"`}, "If-Modified-Since": {after}}, false, Proceed, ""},
		{"If-Modified-Since at the change is a 304", "HEAD", http.Header{"If-Modified-Since": {at}}, false, NotModified, "If-Modified-Since"},
		{"If-Modified-Since before the change holds", "GET", http.Header{"If-Modified-Since": {before}}, false, Proceed, ""},
		{"If-Modified-Since is ignored by PUT", "PUT", http.Header{"If-Modified-Since": {after}}, false, Proceed, ""},
		{"If-Modified-Since is ignored by DELETE", "DELETE", http.Header{"If-Modified-Since": {after}}, false, Proceed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := cur
			if tt.missing {
				v = Validators{}
			}
			c := Parse(tt.method, tt.h)
			res, field := c.Evaluate(v)
			if res != tt.want || field != tt.wantField {
				t.Errorf("%s %v: %v %q, want %v %q", tt.method, tt.h, res, field, tt.want, tt.wantField)
			}
			if c.None() && res != Proceed {
				t.Errorf("None() with a precondition that decides")
			}
		})
	}
}

func TestARequestWithoutPreconditionsNeedsNoCheck(t *testing.T) {
	for _, tt := range []struct {
		method string
		h      http.Header
		want   bool
	}{
		{"PUT", http.Header{}, true},
		{"PUT", http.Header{"If-Modified-Since": {"Mon, 01 Jan 2001 00:00:00 GMT"}}, true}, // ignored by writes
		{"GET", http.Header{"If-Modified-Since": {"Mon, 01 Jan 2001 00:00:00 GMT"}}, false},
		{"PUT", http.Header{"If-Unmodified-Since": {"not a date"}}, true},
		{"DELETE", http.Header{"If-Match": {"junk"}}, false}, // malformed still decides: no match
		{"PUT", http.Header{"If-None-Match": {"*"}}, false},
	} {
		if got := Parse(tt.method, tt.h).None(); got != tt.want {
			t.Errorf("%s %v: None() = %v", tt.method, tt.h, got)
		}
	}
}

func TestIfRange(t *testing.T) {
	lm := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	cur := Validators{Exists: true, ETag: "abc", LastModified: lm}
	tests := []struct {
		name  string
		field string
		want  bool
	}{
		{"absent: the range applies", "", true},
		{"the strong tag", `"abc"`, true},
		{"the weak tag never matches", `W/"abc"`, false},
		{"another tag", `"x"`, false},
		{"a list is not one tag", `"abc", "x"`, false},
		{"the Last-Modified date", lm.Format(http.TimeFormat), true},
		{"another date", lm.Add(time.Second).Format(http.TimeFormat), false},
		{"garbage", "abc", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IfRange(http.Header{"If-Range": {tt.field}}, cur); got != tt.want {
				t.Errorf("If-Range %q = %v", tt.field, got)
			}
		})
	}
}

func TestRangesFollowRFC9110(t *testing.T) {
	tests := []struct {
		name     string
		field    string
		size     int64
		want     RangeResult
		wantSpec string
	}{
		{"no Range", "", 11, Whole, ""},
		{"an unknown unit is ignored", "items=0-1", 11, Whole, ""},
		{"no unit at all is ignored", "0-1", 11, Whole, ""},
		{"the unit ignores case", "BYTES=0-1", 11, Partial, "bytes=0-1"},
		{"a zero-length suffix is unsatisfiable", "bytes=-0", 11, Unsatisfiable, ""},
		{"a start past the end is unsatisfiable", "bytes=11-", 11, Unsatisfiable, ""},
		{"a suffix", "bytes=-5", 11, Partial, "bytes=-5"},
		{"a suffix longer than the object is the object", "bytes=-50", 11, Partial, "bytes=-11"},
		{"a last-pos past the end is clamped", "bytes=6-99", 11, Partial, "bytes=6-10"},
		{"an open range", "bytes=6-", 11, Partial, "bytes=6-10"},
		{"unsatisfiable members are dropped", "bytes=0-1, -0 ,20-30,", 11, Partial, "bytes=0-1"},
		{"several ranges keep their order", "bytes=6-7,0-1", 11, Partial, "bytes=6-7,0-1"},
		{"last-pos below first-pos is malformed", "bytes=5-2", 11, Unsatisfiable, ""},
		{"a sign is malformed", "bytes=+1-2", 11, Unsatisfiable, ""},
		{"a negative suffix is malformed", "bytes=--1", 11, Unsatisfiable, ""},
		{"a number too large is malformed", "bytes=0-99999999999999999999", 11, Unsatisfiable, ""},
		{"an empty set is malformed", "bytes=", 11, Unsatisfiable, ""},
		{"an empty object ignores ranges", "bytes=-5", 0, Whole, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, spec, reason := Range(tt.field, tt.size)
			if res != tt.want || spec != tt.wantSpec {
				t.Errorf("Range(%q, %d) = %v %q, want %v %q", tt.field, tt.size, res, spec, tt.want, tt.wantSpec)
			}
			if (res == Unsatisfiable) != (reason != "") {
				t.Errorf("reason %q for %v", reason, res)
			}
		})
	}
}

// What Range passes on, http.ServeContent serves with a Content-Range that
// means something: never a 416 of its own, never an empty part such as
// bytes 11-10/11.
func TestServeContentServesEverySpecRangeHandsOn(t *testing.T) {
	valid := regexp.MustCompile(`^bytes (\d+)-(\d+)/(\d+)$`)
	fields := []string{"bytes=-0", "bytes=0-", "bytes=-1", "bytes=0-0", "bytes=5-", "bytes=10-10", "bytes=-11", "bytes=-12",
		"bytes=0-1,-0", "bytes=9-,-0,3-3", "bytes=0-100", "bytes=11-,-0", "bytes=1-2,4-5"}
	for _, size := range []int64{1, 2, 11} {
		content := bytes.Repeat([]byte("x"), int(size))
		for _, f := range fields {
			res, spec, _ := Range(f, size)
			if res != Partial {
				continue
			}
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Range", spec)
			w := httptest.NewRecorder()
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(content))
			if w.Code != 206 && w.Code != 200 {
				t.Errorf("size %d, %q → %q: %d", size, f, spec, w.Code)
				continue
			}
			cr := w.Header().Get("Content-Range")
			if w.Code == 206 && cr != "" {
				m := valid.FindStringSubmatch(cr)
				if m == nil {
					t.Errorf("size %d, %q → %q: Content-Range %q", size, f, spec, cr)
					continue
				}
				first, _ := strconv.Atoi(m[1])
				last, _ := strconv.Atoi(m[2])
				if last < first || int64(last) >= size {
					t.Errorf("size %d, %q → %q: Content-Range %q", size, f, spec, cr)
				}
			}
		}
	}
}
