package cache

import "time"

// instant is a reading of the cache's clock (Config.Now) in nanoseconds
// since its epoch: 8 bytes where a time.Time takes 24, for the instants
// every cached tenant keeps. Zero is no instant: the epoch lies a century
// before the cache was built, so every reading of its clock is positive.
//
// Instants of two times compare as the times do when both carry a
// monotonic reading (time.Now's do) or neither does (a fake clock's), as
// time.Time.Sub measures them from the epoch.
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

// time is the time of instant i, for logs and for the functions of times.
func (in instants) time(i instant) time.Time { return in.epoch.Add(time.Duration(i)) }
