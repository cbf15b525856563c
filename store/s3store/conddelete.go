package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/minio/minio-go/v7"
)

// Conditional deletes. AWS S3 (since 2025), MinIO and SeaweedFS answer a
// DELETE that carries If-Match with 412 when the object's ETag differs,
// and keep the object; a server that ignores the header deletes it. So the
// first conditional delete (and `store --check`) probes the server: a
// probe object is written and DELETEd with an If-Match that cannot match;
// if it survives, the server honours the condition and DeleteIf sends it
// with the DELETE; if not, DeleteIf falls back to checking on a HEAD just
// before the DELETE, and says so in the log once.

const (
	condUnknown int32 = iota
	condHonoured
	condIgnored
)

type headersKey struct{}

// withHeaders makes the requests of ctx carry h.
func withHeaders(ctx context.Context, h map[string]string) context.Context {
	return context.WithValue(ctx, headersKey{}, h)
}

// ctxHeaders is the transport that adds them. The headers are added after
// minio-go signed the request: SigV4 signs the x-amz-* headers and Host,
// and a server takes other headers unsigned.
type ctxHeaders struct{ *http.Transport }

func (t ctxHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	if h, ok := r.Context().Value(headersKey{}).(map[string]string); ok && len(h) > 0 {
		r = r.Clone(r.Context())
		for k, v := range h {
			r.Header.Set(k, v)
		}
	}
	return t.Transport.RoundTrip(r)
}

// removeIfMatch deletes name if its S3 ETag is etag (when the server
// honours the condition): a 412 is returned as it is (isPreconditionFailed),
// and so is a 404 to a conditional DELETE (errGone).
func (s *Store) removeIfMatch(name, etag string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	conditional := etag != "" && s.conditionalDeletes()
	if conditional {
		ctx = withHeaders(ctx, map[string]string{"If-Match": `"` + trimQuotes(etag) + `"`})
	}
	err := s.c.RemoveObject(ctx, s.bucket, name, minio.RemoveObjectOptions{})
	if err != nil && isNotFound(err) {
		if conditional {
			return errGone
		}
		return nil
	}
	return err
}

// errGone is what removeIfMatch returns when the object was gone before
// its conditional DELETE (AWS answers 404 there, SeaweedFS 412): another
// delete took it, and gave its charge back, so the caller must not.
var errGone = errors.New("the object was deleted by another")

func trimQuotes(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// conditionalDeletes says whether the server honours If-Match on DELETE,
// probing it the first time (and again after a probe that could not
// reach it, which counts as no for that call).
func (s *Store) conditionalDeletes() bool {
	switch s.condDelete.Load() {
	case condHonoured:
		return true
	case condIgnored:
		return false
	}
	ok, err := s.probeConditionalDelete()
	if err != nil {
		slog.Warn("s3 store: could not probe conditional deletes; this delete checks on a HEAD first", "store", s.where, "err", err)
		return false
	}
	return ok
}

// probeConditionalDelete writes a probe object under <prefix>.check/ and
// DELETEs it with an If-Match that cannot match: the server honours the
// condition if the object survives. The result is kept (and logged when
// the server ignores it).
func (s *Store) probeConditionalDelete() (bool, error) {
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	switch s.condDelete.Load() {
	case condHonoured:
		return true, nil
	case condIgnored:
		return false, nil
	}
	ctx, cancel := s.ctx()
	defer cancel()
	key := s.prefix + ".check/delete-if-match-" + randomID()
	probe := []byte("interceptd conditional delete probe")
	if _, err := s.c.PutObject(ctx, s.bucket, key, bytes.NewReader(probe), int64(len(probe)), minio.PutObjectOptions{DisableMultipart: true}); err != nil {
		return false, s.wrap("probe", err)
	}
	defer s.c.RemoveObject(context.Background(), s.bucket, key, minio.RemoveObjectOptions{})
	derr := s.c.RemoveObject(withHeaders(ctx, map[string]string{"If-Match": `"00000000000000000000000000000000"`}), s.bucket, key, minio.RemoveObjectOptions{})
	if derr != nil && !isPreconditionFailed(derr) {
		if refusesIfMatch(derr) {
			// An answer, and a lasting one: asked again, at every
			// delete, it would cost each three calls in turn.
			s.condDelete.Store(condIgnored)
			slog.Warn("s3 store refuses If-Match on DELETE: a conditional delete checks its condition on a HEAD just before the DELETE, and a write landing between the two is deleted",
				"store", s.where, "answer", derr)
			return false, nil
		}
		return false, s.wrap("probe", derr)
	}
	_, serr := s.c.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	switch {
	case serr == nil:
		s.condDelete.Store(condHonoured)
		return true, nil
	case isNotFound(serr):
		s.condDelete.Store(condIgnored)
		slog.Warn("s3 store ignores If-Match on DELETE: a conditional delete checks its condition on a HEAD just before the DELETE, and a write landing between the two is deleted",
			"store", s.where)
		return false, nil
	default:
		return false, fmt.Errorf("probing conditional deletes: %w", s.wrap("probe", serr))
	}
}

// refusesIfMatch says whether a DELETE's failure is the server's refusal
// of the If-Match header (501, or a 400 naming it) rather than a failure
// to reach it.
func refusesIfMatch(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusNotImplemented || r.Code == "NotImplemented" ||
		(r.StatusCode == http.StatusBadRequest && (r.Code == "InvalidArgument" || r.Code == "InvalidRequest"))
}

// ConditionalDeletes probes the server (once) and reports whether it
// honours If-Match on DELETE; Check runs it.
func (s *Store) ConditionalDeletes() (bool, error) { return s.probeConditionalDelete() }
