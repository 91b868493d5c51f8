//go:build !linux

package main

import "time"

// pacer sleeps with time.Sleep where there is no timerfd. Sub-millisecond
// sleeps may then run late, and the open-loop figures count that lateness
// as latency: measure on Linux.
type pacer struct{}

func newPacer() (*pacer, error) { return &pacer{}, nil }

func (p *pacer) sleep(d time.Duration) error {
	time.Sleep(d)
	return nil
}

func (p *pacer) close() error { return nil }
