package cache

import (
	"testing"
	"time"
)

func TestRefreshPoint(t *testing.T) {
	issued := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	token := func(lifetime time.Duration) Token {
		return Token{ExpiresAt: issued.Add(lifetime), Lifetime: lifetime}
	}
	for _, tc := range []struct {
		name                 string
		lifetime             time.Duration
		refreshAt, jitter, r float64
		want                 time.Duration // after issue
	}{
		{"day, 0.8", 86400 * time.Second, 0.8, 0, 0, 69120 * time.Second},
		{"day, 0.8, full jitter", 86400 * time.Second, 0.8, 0.05, 0.999999, 64800*time.Second + 86400*time.Microsecond*50/1000},
		{"day, 0.8, half jitter", 86400 * time.Second, 0.8, 0.05, 0.5, 66960 * time.Second},
		// 5 minutes: margin 30 s, usable 270 s, clamp at 243 s.
		{"5 min, 0.8", 5 * time.Minute, 0.8, 0, 0, 240 * time.Second},
		{"5 min, 0.95 clamped", 5 * time.Minute, 0.95, 0, 0, 243 * time.Second},
		{"5 min, 0.95 clamped, then jittered", 5 * time.Minute, 0.95, 0.05, 0.5, 243*time.Second - 7500*time.Millisecond},
		{"day, 0.99 clamped", 86400 * time.Second, 0.99, 0, 0, time.Duration(0.9 * float64(86370*time.Second))},
		// 100 s: margin 10 s, usable 90 s, clamp at 81 s.
		{"100 s, 0.8", 100 * time.Second, 0.8, 0, 0, 80 * time.Second},
		{"100 s, 0.9 clamped", 100 * time.Second, 0.9, 0, 0, 81 * time.Second},
		// 10 s: margin 1 s, usable 9 s.
		{"10 s, 0.1", 10 * time.Second, 0.1, 0, 0, time.Second},
		{"jitter never before issue", 10 * time.Second, 0.1, 0.2, 0.9, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := token(tc.lifetime)
			got := refreshPoint(tok, tc.refreshAt, tc.jitter, tc.r).Sub(issued)
			if d := got - tc.want; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("refresh point = %v after issue, want %v", got, tc.want)
			}
			if !refreshPoint(tok, tc.refreshAt, tc.jitter, tc.r).Before(tok.UsableUntil()) {
				t.Error("refresh point inside the safety margin")
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		left     time.Duration
		interval time.Duration
		want     time.Duration
		ok       bool
	}{
		{"interval shorter than a quarter", time.Hour, 5 * time.Second, 5 * time.Second, true},
		{"a quarter shorter", 10 * time.Second, 5 * time.Second, 2500 * time.Millisecond, true},
		{"at least a second", 3 * time.Second, 5 * time.Second, time.Second, true},
		{"no time for a try", time.Second, 5 * time.Second, time.Second, false},
		{"past the margin", -time.Second, 5 * time.Second, time.Second, false},
		{"long interval", 40 * time.Second, time.Minute, 10 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := retryDelay(now, now.Add(tc.left), tc.interval)
			if d != tc.want || ok != tc.ok {
				t.Errorf("retryDelay = %v, %v; want %v, %v", d, ok, tc.want, tc.ok)
			}
		})
	}
}
