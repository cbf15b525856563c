// Package precond evaluates HTTP preconditions and byte ranges as RFC 9110
// gives them (§13 and §14), once, for every method: one parser of
// entity-tag lists and one evaluation in §13.2.2's order, so a read and a
// write with the same header answer the same.
//
// It knows nothing of storage: a caller hands it the validators of the
// current representation. A writer evaluates the conditions again against
// the representation it is about to replace, inside the commit that replaces
// it (see store.PutOptions.Precondition), so a concurrent writer cannot slip
// between the check and the write.
package precond

import (
	"net/http"
	"strings"
	"time"
)

// Validators describe the current representation of a resource.
type Validators struct {
	// Exists is false when there is no current representation.
	Exists bool
	// ETag is the strong entity tag's opaque value, without quotes.
	ETag string
	// LastModified is the modification date; zero when there is none.
	LastModified time.Time
}

// Result is what a request's preconditions decide.
type Result int

const (
	// Proceed: every precondition holds (or none was given); perform the
	// method.
	Proceed Result = iota
	// NotModified: a GET or HEAD answers 304.
	NotModified
	// Failed: answer 412 and leave the resource alone.
	Failed
)

// entityTag is one member of an If-Match or If-None-Match list.
type entityTag struct {
	weak   bool
	opaque string // without quotes
}

// tagList is a parsed If-Match or If-None-Match field.
type tagList struct {
	present bool
	any     bool // "*"
	// malformed lists match nothing: an unquoted tag, a "*" among tags,
	// a stray character. Go's net/http reads them the same way.
	malformed bool
	tags      []entityTag
}

// parseTags parses the field lines of an If-Match or If-None-Match field:
// "*" / #entity-tag (RFC 9110 §13.1.1), entity-tag = [ "W/" ] DQUOTE
// *etagc DQUOTE. An all-empty field counts as absent.
func parseTags(values []string) tagList {
	s := strings.Join(values, ",")
	if strings.Trim(s, " \t,") == "" {
		return tagList{}
	}
	l := tagList{present: true}
	if strings.TrimSpace(s) == "*" {
		l.any = true
		return l
	}
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return l
		}
		var t entityTag
		if strings.HasPrefix(s, "W/") {
			t.weak, s = true, s[2:]
		}
		if len(s) < 2 || s[0] != '"' {
			return tagList{present: true, malformed: true}
		}
		end := 1
		for end < len(s) && s[end] != '"' {
			if c := s[end]; c < 0x21 || c == 0x7f {
				return tagList{present: true, malformed: true}
			}
			end++
		}
		if end == len(s) {
			return tagList{present: true, malformed: true}
		}
		t.opaque, s = s[1:end], strings.TrimLeft(s[end+1:], " \t")
		if s != "" && s[0] != ',' {
			return tagList{present: true, malformed: true}
		}
		l.tags = append(l.tags, t)
	}
}

// matches reports whether the list matches the current representation,
// with the strong comparison (If-Match) or the weak one (If-None-Match).
// Nothing matches a missing representation; a malformed list matches
// nothing.
func (l tagList) matches(cur Validators, strong bool) bool {
	if !cur.Exists || l.malformed {
		return false
	}
	if l.any {
		return true
	}
	for _, t := range l.tags {
		if t.opaque == cur.ETag && !(strong && t.weak) {
			return true
		}
	}
	return false
}

// Conditions are a request's preconditions, parsed once and evaluated
// against the current representation as often as a caller needs.
type Conditions struct {
	read              bool // GET or HEAD
	ifMatch           tagList
	ifNoneMatch       tagList
	ifUnmodifiedSince time.Time // zero: absent or ignored
	ifModifiedSince   time.Time
}

// Parse reads the preconditions of a request with method and header h.
// A date that is not one valid HTTP-date is ignored (§13.1.3, §13.1.4);
// If-Modified-Since is ignored unless the method is GET or HEAD.
func Parse(method string, h http.Header) Conditions {
	c := Conditions{
		read:        method == http.MethodGet || method == http.MethodHead,
		ifMatch:     parseTags(h.Values("If-Match")),
		ifNoneMatch: parseTags(h.Values("If-None-Match")),
	}
	c.ifUnmodifiedSince = date(h.Values("If-Unmodified-Since"))
	if c.read {
		c.ifModifiedSince = date(h.Values("If-Modified-Since"))
	}
	return c
}

func date(values []string) time.Time {
	if len(values) != 1 {
		return time.Time{}
	}
	t, err := http.ParseTime(values[0])
	if err != nil {
		return time.Time{}
	}
	return t
}

// None reports whether the request has no precondition to evaluate.
func (c Conditions) None() bool {
	return !c.ifMatch.present && !c.ifNoneMatch.present && c.ifUnmodifiedSince.IsZero() && c.ifModifiedSince.IsZero()
}

// Evaluate decides the preconditions against the current representation in
// RFC 9110 §13.2.2's order, and names the field that decided when the
// answer is not Proceed. The caller applies §13.2.1 itself: a request whose
// answer without conditions would not be 2xx or 412 (a GET of a missing
// object: 404) is not evaluated.
func (c Conditions) Evaluate(cur Validators) (Result, string) {
	// HTTP dates have a resolution of one second.
	lm := cur.LastModified.Truncate(time.Second)
	// 1. If-Match; 2. else If-Unmodified-Since, which needs a
	// modification date to compare with (§13.1.4).
	if c.ifMatch.present {
		if !c.ifMatch.matches(cur, true) {
			return Failed, "If-Match"
		}
	} else if !c.ifUnmodifiedSince.IsZero() && cur.Exists && !lm.IsZero() && lm.After(c.ifUnmodifiedSince) {
		return Failed, "If-Unmodified-Since"
	}
	// 3. If-None-Match; 4. else If-Modified-Since (GET and HEAD only).
	if c.ifNoneMatch.present {
		if c.ifNoneMatch.matches(cur, false) {
			if c.read {
				return NotModified, "If-None-Match"
			}
			return Failed, "If-None-Match"
		}
	} else if !c.ifModifiedSince.IsZero() && cur.Exists && !lm.IsZero() && !lm.After(c.ifModifiedSince) {
		return NotModified, "If-Modified-Since"
	}
	return Proceed, ""
}

// IfRange reports whether a GET's Range applies (§13.1.5): true without
// If-Range, or when If-Range holds the current strong entity tag (a weak or
// malformed tag never does) or exactly the Last-Modified date. When it
// returns false the whole representation is sent and Range ignored.
func IfRange(h http.Header, cur Validators) bool {
	v := strings.TrimSpace(h.Get("If-Range"))
	switch {
	case v == "":
		return true
	case strings.HasPrefix(v, `"`) || strings.HasPrefix(v, "W/"):
		l := parseTags([]string{v})
		return len(l.tags) == 1 && !l.any && l.matches(cur, true)
	}
	t, err := http.ParseTime(v)
	return err == nil && !cur.LastModified.IsZero() && t.Equal(cur.LastModified.Truncate(time.Second))
}
