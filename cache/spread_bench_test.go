package cache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// timerStarts is an Observer that counts the timer's refresh starts per
// second of the fake clock.
type timerStarts struct {
	nopObserver
	clock *clock
	mu    sync.Mutex
	per   map[int64]int
}

func (o *timerStarts) RefreshTimer(Key) {
	sec := o.clock.Now().Unix()
	o.mu.Lock()
	o.per[sec]++
	o.mu.Unlock()
}

// BenchmarkBackgroundRefreshSpread fetches 10,000 tokens in one burst (the
// same instant), serves each once, then steps the fake clock a second at a
// time through their refresh window and reports how the timer's refreshes
// spread: the most started in any one second, and over how many seconds.
func BenchmarkBackgroundRefreshSpread(b *testing.B) {
	const tokens = 10000
	for _, bc := range []struct {
		name     string
		lifetime time.Duration
	}{
		{"24h-token", 86399 * time.Second},
		{"5min-token", 5 * time.Minute},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				clk := newClock()
				obs := &timerStarts{clock: clk, per: map[int64]int{}}
				src := &scripted{clock: clk, lifetime: bc.lifetime}
				c, err := New(Config{Source: src, Now: clk.Now, AfterFunc: clk.AfterFunc,
					Capacity: tokens, MaxConcurrentFetches: 64, Observer: obs})
				if err != nil {
					b.Fatal(err)
				}
				var wg sync.WaitGroup
				for i := range tokens {
					wg.Go(func() {
						if _, err := c.Get(context.Background(), Key{"genesys", fmt.Sprint("t", i)}); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
				start := clk.Now()
				for clk.Now().Sub(start) < bc.lifetime*9/10 {
					clk.Advance(time.Second)
					for !c.sched.settled(clk.Now()) {
						time.Sleep(50 * time.Microsecond)
					}
				}
				for src.count(ReasonAhead) < tokens {
					time.Sleep(time.Millisecond) // the last fetches
				}
				c.Close()
				most, total := 0, 0
				var first, last int64
				for sec, n := range obs.per {
					most = max(most, n)
					total += n
					if first == 0 || sec < first {
						first = sec
					}
					last = max(last, sec)
				}
				if total != tokens {
					b.Fatalf("%d timer refreshes, want %d", total, tokens)
				}
				b.ReportMetric(float64(most), "max-refreshes/s")
				b.ReportMetric(float64(last-first+1), "spread-s")
			}
		})
	}
}
