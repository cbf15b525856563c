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
