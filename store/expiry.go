package store

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The limits of an expiry. A record keeps its expiry as unix nanoseconds in
// an int64 (see encodeRecord), which ends at 2262-04-11T23:47:16.854775807Z:
// a later time would wrap and come back as another one (or in the past, so
// the key would vanish as it is written). Every write path asks ParseExpiry,
// and the store refuses what ParseExpiry would, so none can get past.
const (
	// MinTTL is the shortest TTL, in seconds.
	MinTTL = 1
	// MaxTTL is the longest TTL, in seconds: 100 years.
	MaxTTL = 100 * 365 * 86400
	// MaxExpiration is the latest expiration, in unix seconds: the last
	// whole second the store's nanosecond encoding holds exactly
	// (2262-04-11T23:47:16Z).
	MaxExpiration = 9223372036
)

// MaxExpiry is MaxExpiration as a time.
var MaxExpiry = time.Unix(MaxExpiration, 0).UTC()

// ErrInvalidExpiry is the class of every refused TTL or expiration; the
// error itself (an *ExpiryError) names the value and the limit.
var ErrInvalidExpiry = errors.New("invalid expiry")

// ExpiryError is a refused TTL or expiration. Its message is for clients.
type ExpiryError struct{ Reason string }

func (e *ExpiryError) Error() string        { return e.Reason }
func (e *ExpiryError) Is(target error) bool { return target == ErrInvalidExpiry }

func expiryErrorf(format string, a ...any) error {
	return &ExpiryError{Reason: fmt.Sprintf(format, a...)}
}

// ParseExpiry turns a write's ttl (seconds from now) or expiration (unix
// seconds), as a client wrote them, into the absolute expiry to store: the
// zero time when neither is given (""), an *ExpiryError otherwise when it
// cannot be honoured exactly. It refuses both at once, anything but a
// decimal integer (fractions, exponents, words), a ttl outside
// MinTTL..MaxTTL, an expiration not after now or after MaxExpiration.
func ParseExpiry(ttl, expiration string, now time.Time) (time.Time, error) {
	switch {
	case ttl != "" && expiration != "":
		return time.Time{}, expiryErrorf("give ttl or expiration, not both")
	case ttl != "":
		n, err := strconv.ParseInt(ttl, 10, 64)
		if err != nil || n < MinTTL || n > MaxTTL {
			return time.Time{}, expiryErrorf("ttl %q: want whole seconds, at least %d and at most %d (100 years)", clip(ttl), MinTTL, MaxTTL)
		}
		t := now.Add(time.Duration(n) * time.Second)
		if !t.After(time.Unix(0, 0)) || t.After(MaxExpiry) {
			return time.Time{}, expiryErrorf("ttl %q: ends after %d (%s), the latest expiry the store holds", clip(ttl), MaxExpiration, MaxExpiry.Format(time.RFC3339))
		}
		return t, nil
	case expiration != "":
		n, err := strconv.ParseInt(expiration, 10, 64)
		switch {
		case err != nil && !errors.Is(err, strconv.ErrRange):
			return time.Time{}, expiryErrorf("expiration %q: want a unix time in whole seconds", clip(expiration))
		case err != nil && n < 0:
			return time.Time{}, expiryErrorf("expiration %q: in the past; want a unix time in the future", clip(expiration))
		case err != nil || n > MaxExpiration:
			return time.Time{}, expiryErrorf("expiration %q: after %d (%s), the latest expiry the store holds", clip(expiration), MaxExpiration, MaxExpiry.Format(time.RFC3339))
		case n <= now.Unix():
			return time.Time{}, expiryErrorf("expiration %q: in the past; want a unix time in the future", clip(expiration))
		}
		return time.Unix(n, 0), nil
	}
	return time.Time{}, nil
}

// checkExpiry refuses an expiry the record encoding cannot hold exactly:
// one at or before the epoch (0 means "never"; earlier is negative) or
// after MaxExpiry. The zero time, no expiry, passes. It does not refuse a
// past expiry: that key is merely expired at once, and the clock is the
// caller's.
func checkExpiry(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	if !t.After(time.Unix(0, 0)) || t.After(MaxExpiry) {
		return expiryErrorf("expiry %s: outside what the store holds, 1970-01-01T00:00:00Z to %s", t.UTC().Format(time.RFC3339Nano), MaxExpiry.Format(time.RFC3339))
	}
	return nil
}

// clip keeps a client's token short and printable in a message.
func clip(s string) string {
	long := len(s) > 32
	if long {
		s = s[:32]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if long {
		return string(b) + "..."
	}
	return string(b)
}
