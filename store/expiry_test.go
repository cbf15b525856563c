package store

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 250_000_000)
	tests := []struct {
		name     string
		ttl, exp string
		want     time.Time // when accepted
		refused  string    // a part of the refusal; "" for accepted
	}{
		{"neither given means no expiry", "", "", time.Time{}, ""},
		{"a ttl counts from now, to the nanosecond", "60", "", now.Add(time.Minute), ""},
		{"the longest ttl is 100 years", "3153600000", "", now.Add(MaxTTL * time.Second), ""},
		{"an expiration is that second", "", "1800000001", time.Unix(1800000001, 0), ""},
		{"an expiration at the limit is that second", "", "9223372036", time.Unix(MaxExpiration, 0), ""},
		{"a ttl of 0 is refused with the minimum", "0", "", time.Time{}, "at least 1"},
		{"a negative ttl is refused with the minimum", "-5", "", time.Time{}, "at least 1"},
		{"a fractional ttl is refused", "1.5", "", time.Time{}, "whole seconds"},
		{"an exponent ttl is refused", "1e3", "", time.Time{}, "whole seconds"},
		{"a ttl one over the cap names the cap", "3153600001", "", time.Time{}, "at most 3153600000 (100 years)"},
		{"a ttl that would overflow a duration names the cap", "10000000000", "", time.Time{}, "at most 3153600000"},
		{"a ttl past int64 names the cap", "99999999999999999999", "", time.Time{}, "at most 3153600000"},
		{"an expiration now is refused as past", "", "1800000000", time.Time{}, "in the past"},
		{"an expiration of 0 is refused as past", "", "0", time.Time{}, "in the past"},
		{"a negative expiration past int64 is refused as past", "", "-99999999999999999999", time.Time{}, "in the past"},
		{"a fractional expiration is refused", "", "1800000001.5", time.Time{}, "whole seconds"},
		{"an expiration a second after the limit names it", "", "9223372037", time.Time{}, "after 9223372036 (2262-04-11T23:47:16Z)"},
		{"an expiration in 2286 names the limit", "", "10000000000", time.Time{}, "after 9223372036"},
		{"an expiration past int64 names the limit", "", "99999999999999999999", time.Time{}, "after 9223372036"},
		{"both are refused", "60", "1800000001", time.Time{}, "not both"},
		{"a long token is clipped in the message", strings.Repeat("9", 100), "", time.Time{}, `"` + strings.Repeat("9", 32) + `..."`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseExpiry(tt.ttl, tt.exp, now)
			if tt.refused != "" {
				if !errors.Is(err, ErrInvalidExpiry) || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("ParseExpiry(%q, %q) = %v, %v; want a refusal saying %q", tt.ttl, tt.exp, got, err, tt.refused)
				}
				return
			}
			if err != nil || !got.Equal(tt.want) {
				t.Fatalf("ParseExpiry(%q, %q) = %v, %v; want %v", tt.ttl, tt.exp, got, err, tt.want)
			}
		})
	}
}

func TestTheStoreRefusesAnExpiryItCannotHold(t *testing.T) {
	db := openTest(t, nil)
	kv := db.KV("ns")
	for _, tc := range []struct {
		name string
		at   time.Time
	}{
		{"a nanosecond after the limit", MaxExpiry.Add(time.Nanosecond)},
		{"the year 2286", time.Unix(10_000_000_000, 0)},
		{"the epoch, which the encoding reads as never", time.Unix(0, 0)},
		{"before the epoch", time.Unix(-1, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := kv.Put("k", Entry{Value: []byte("v"), Expires: tc.at})
			if !errors.Is(err, ErrInvalidExpiry) {
				t.Fatalf("Put with expiry %v: %v, want ErrInvalidExpiry", tc.at, err)
			}
			_, err = kv.Apply(Txn{Writes: []Write{{"k", Entry{Value: []byte("v"), Expires: tc.at}}}})
			if !errors.Is(err, ErrInvalidExpiry) {
				t.Fatalf("a transaction with expiry %v: %v, want ErrInvalidExpiry", tc.at, err)
			}
			if _, err := kv.Get("k"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a refused write stored the key: %v", err)
			}
		})
	}
}

// FuzzExpiryRoundTrip parses a ttl or expiration as a client wrote it,
// stores the result and reads it back: what was accepted means what it
// said and comes back exactly (from Get, the listing, and after a reap at
// that moment); what was refused is an ErrInvalidExpiry. An expiry handed
// to the store directly is stored exactly or refused the same way.
func FuzzExpiryRoundTrip(f *testing.F) {
	for _, s := range [][2]string{{"60", ""}, {"", "1900000000"}, {"0", ""}, {"-5", ""}, {"1.5", ""},
		{"10000000000", ""}, {"", "10000000000"}, {"", "99999999999"}, {"", "9223372036"}, {"60", "1900000000"}} {
		f.Add(s[0], s[1], int64(1_800_000_000), int64(1_900_000_000), int64(5))
	}
	f.Add("", "", int64(0), int64(MaxExpiration), int64(854775807))
	f.Add("", "", int64(0), int64(-1), int64(999999999))
	f.Add("", "", int64(0), int64(0), int64(0))
	var clock time.Time
	db, err := Open(f.TempDir(), &Options{Now: func() time.Time { return clock }})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	kv := db.KV("fuzz")
	n := 0
	f.Fuzz(func(t *testing.T, ttl, expiration string, at, secs, nanos int64) {
		n++
		key := "k" + strconv.Itoa(n)
		if at < 0 {
			at = -(at + 1)
		}
		clock = time.Unix(at%(MaxExpiration+1), 0)
		got, err := ParseExpiry(ttl, expiration, clock)
		if err != nil {
			if !errors.Is(err, ErrInvalidExpiry) {
				t.Fatalf("ParseExpiry(%q, %q): %v, not an ErrInvalidExpiry", ttl, expiration, err)
			}
		} else {
			// What was accepted says what the client asked for.
			switch {
			case ttl != "":
				s, perr := strconv.ParseInt(ttl, 10, 64)
				if perr != nil || s < MinTTL || s > MaxTTL || !got.Equal(clock.Add(time.Duration(s)*time.Second)) {
					t.Fatalf("ttl %q at %v accepted as %v", ttl, clock, got)
				}
			case expiration != "":
				s, perr := strconv.ParseInt(expiration, 10, 64)
				if perr != nil || s <= clock.Unix() || s > MaxExpiration || !got.Equal(time.Unix(s, 0)) {
					t.Fatalf("expiration %q at %v accepted as %v", expiration, clock, got)
				}
			case !got.IsZero():
				t.Fatalf("neither given, accepted as %v", got)
			}
			if err := kv.Put(key, Entry{Value: []byte("v"), Expires: got}); err != nil {
				t.Fatalf("ParseExpiry accepted %v, the store refuses it: %v", got, err)
			}
			db.Reap()
			e, err := kv.Get(key)
			if err != nil || !e.Expires.Equal(got) {
				t.Fatalf("wrote expiry %v, read back %v, %v", got, e.Expires, err)
			}
			l, err := kv.List(ListOptions{Prefix: key, Limit: 1})
			if err != nil || len(l.Keys) != 1 || (!got.IsZero() && l.Keys[0].Expiration != got.Unix()) {
				t.Fatalf("wrote expiry %v, listed %+v, %v", got, l.Keys, err)
			}
			kv.Delete(key)
		}
		// An expiry the store is handed directly, read back at the epoch.
		at2 := time.Unix(secs, nanos)
		clock = time.Unix(0, 0)
		err = kv.Put(key, Entry{Value: []byte("v"), Expires: at2})
		holdable := at2.After(time.Unix(0, 0)) && !at2.After(MaxExpiry)
		switch {
		case !holdable && !errors.Is(err, ErrInvalidExpiry):
			t.Fatalf("stored expiry %v: %v, want ErrInvalidExpiry", at2, err)
		case holdable && err != nil:
			t.Fatalf("refused expiry %v: %v", at2, err)
		case holdable:
			if e, err := kv.Get(key); err != nil || !e.Expires.Equal(at2) {
				t.Fatalf("wrote expiry %v, read back %v, %v", at2, e.Expires, err)
			}
			kv.Delete(key)
		}
	})
}
