package handlers

import (
	"io"
	"net/http"
)

// Scrubber masks secrets in what goes back to a sandbox: every header block
// and the body, in every form the proxy's scrubber knows (case, base64,
// hex, URL and JSON escapes; see secrets.go). The proxy handler uses it
// internally; a worker whose env holds secrets runs its responses through
// one, so a script that reflects a secret it injected does not hand it to
// the sandbox.
type Scrubber struct{ s *scrubber }

// NewScrubber masks secrets; nil when there are none to mask.
func NewScrubber(secrets [][]byte) *Scrubber {
	if len(secrets) == 0 {
		return nil
	}
	return &Scrubber{s: newScrubber(secrets)}
}

// Header masks h's values in place.
func (s *Scrubber) Header(h http.Header) { s.s.scrubHeader(h) }

// Body returns body masked as it streams. A gzip or deflate body (as h's
// Content-Encoding says) is decoded first, and h then announces neither
// the coding nor a length; a body in another coding cannot be scrubbed
// and is refused (ErrEncodedBody).
func (s *Scrubber) Body(h http.Header, body io.ReadCloser) (io.ReadCloser, error) {
	resp := &http.Response{Header: h, Body: body}
	if err := decodeBody(resp); err != nil {
		return nil, err
	}
	return newRedactor(resp.Body, s.s), nil
}

// ErrEncodedBody is Scrubber.Body's refusal of a body in a coding it
// cannot undo.
var ErrEncodedBody = errEncodedBody
