package ratelimit

import (
	"testing"
	"time"
)

func TestABucketAllowsItsBurstThenItsRate(t *testing.T) {
	l := New(10)
	now := time.Unix(1000, 0)
	n := 0
	for l.Allow("a", now) {
		n++
	}
	if n != 20 {
		t.Fatalf("burst of %d, want 20 (twice the rate)", n)
	}
	if !l.Allow("b", now) {
		t.Fatal("another key was limited by the first one's burst")
	}
	if l.Allow("a", now.Add(50*time.Millisecond)) {
		t.Fatal("half a token was granted")
	}
	if !l.Allow("a", now.Add(150*time.Millisecond)) {
		t.Fatal("a token earned over 100 ms was refused")
	}
	l.Forget("a")
	if !l.Allow("a", now.Add(150*time.Millisecond)) {
		t.Fatal("a forgotten key did not start afresh")
	}
}

func TestNoRateMeansNoLimit(t *testing.T) {
	var l *PerKey = New(0)
	for range 1000 {
		if !l.Allow("a", time.Unix(0, 0)) {
			t.Fatal("limited without a rate")
		}
	}
	l.Forget("a")
}

func TestAKeysOwnRateReplacesTheDefault(t *testing.T) {
	l := New(10)
	now := time.Unix(1000, 0)
	n := 0
	for l.AllowAt("a", 2, now) {
		n++
	}
	if n != 4 {
		t.Fatalf("a key with its own rate of 2 got a burst of %d, want 4", n)
	}
	n = 0
	for l.AllowAt("b", 0, now) && n < 1000 {
		n++
	}
	if n != 1000 {
		t.Fatalf("a key with no limit of its own was limited after %d", n)
	}
}

func TestAReloadedDefaultRateCapsWhatABucketHolds(t *testing.T) {
	l := New(100)
	now := time.Unix(1000, 0)
	l.Allow("a", now) // a bucket of 200 tokens, less one
	l.SetRate(1)
	n := 0
	for l.Allow("a", now) {
		n++
	}
	if n != 2 {
		t.Fatalf("after the rate went from 100 to 1, the bucket still gave %d, want the new burst of 2", n)
	}
	if New(0).Rate() != 0 || !New(0).Allow("a", now) {
		t.Fatal("a zero default rate limited")
	}
}
