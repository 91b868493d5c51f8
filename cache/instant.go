package cache

import (
	"math"
	"time"
)

// instant is a reading of the cache's clock (Config.Now) in nanoseconds
// since its epoch: 8 bytes where a time.Time takes 24, for the instants
// every cached tenant keeps. Zero is no instant: the epoch lies a century
// before the cache was built, so every reading of its clock is positive.
//
// Instants of two times compare as the times do when both carry a
// monotonic reading (time.Now's do) or neither does (a fake clock's), as
// time.Time.Sub measures them from the epoch. A token's expiry without one
// (a shared cache's, decoded from unix ns) is compared with the wall clock,
// as time.Time compares it: its view's instants are on the wall timeline
// (view.wall), and the reading of now they are compared with is taken there
// too (on), so that a step of the wall clock moves that expiry.
type instant int64

// epochLead is how long before the cache's first reading its epoch lies.
const epochLead = 100 * 365 * 24 * time.Hour

// instants reads the cache's clock as instants.
type instants struct {
	epoch time.Time
	read  func() time.Time
}

func newInstants(now func() time.Time) instants {
	return instants{epoch: now().Add(-epochLead), read: now}
}

// now is the clock's reading now.
func (in instants) now() instant { return in.of(in.read()) }

// of is t's instant.
func (in instants) of(t time.Time) instant { return instant(t.Sub(in.epoch)) }

// on is t's instant on the wall timeline when wall is set (t's monotonic
// reading dropped), on the clock's otherwise: the reading of now to compare
// with the instants of a view whose wall is as given.
func (in instants) on(t time.Time, wall bool) instant {
	if wall {
		t = t.Round(0)
	}
	return in.of(t)
}

// clock is instant i, on the wall timeline when wall is set, moved onto the
// clock's timeline as of the reading t: where the scheduler, which reads the
// clock, is to wake for it. A step of the wall clock after t moves it off
// again; the wake-up then checks i against a new reading and asks again.
func (in instants) clock(i instant, wall bool, t time.Time) instant {
	skew := in.on(t, true) - in.of(t) // how far the wall clock was stepped
	if !wall || skew == 0 {
		return i
	}
	if skew < 0 && i > math.MaxInt64+skew {
		return math.MaxInt64 // an expiry past 2262 (of saturates there too)
	}
	return i - skew
}

// onWall reports whether the instants of t are on the wall timeline: t
// carries no monotonic reading (Round(0) strips one).
func onWall(t time.Time) bool { return t == t.Round(0) }

// time is the time of instant i, for logs and for the functions of times.
func (in instants) time(i instant) time.Time { return in.epoch.Add(time.Duration(i)) }
