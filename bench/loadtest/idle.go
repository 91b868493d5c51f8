package main

import (
	"context"
	"fmt"
	"io"
)

// idleResult is the idle scenario's reading: a fresh sidecar after one
// token, its connections to the generator closed, -settle later.
type idleResult struct {
	// RSS is VmRSS; Anon and File split it into the process's own pages
	// (heap, stacks, written data) and the pages of its binary mapped in
	// (clean, shared by every process running the same file).
	RSS  int64 `json:"rss_bytes"`
	Anon int64 `json:"rss_anon_bytes"`
	File int64 `json:"rss_file_bytes"`
	// SettleSeconds is how long the sidecar sat idle before the reading.
	SettleSeconds float64 `json:"settle_seconds"`
}

// runIdle measures what a sidecar costs at rest (issue 14): one tenant's
// token fetched, then nothing.
func runIdle(ctx context.Context, o options, log io.Writer) (*idleResult, error) {
	e, err := startEnv(ctx, o, false)
	if err != nil {
		return nil, err
	}
	defer e.close()
	if _, err := e.warm(ctx, 1, func(int64) string { return "idle-tenant" }, 1); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "loadtest: idle: one token fetched; settling %s\n", o.settle)
	e.settle(ctx, o.settle)
	kib := func(field string) int64 {
		n, err := e.side.procStatus(field)
		if err != nil {
			return -1
		}
		return n << 10
	}
	return &idleResult{RSS: kib("VmRSS"), Anon: kib("RssAnon"), File: kib("RssFile"), SettleSeconds: o.settle.Seconds()}, nil
}

func (r *report) printIdle(w io.Writer) {
	m := r.Idle
	fmt.Fprintf(w, "== idle (issue 14): one token fetched, connections closed, %.0f s idle\n", m.SettleSeconds)
	fmt.Fprintf(w, "RSS %.1f MiB = anonymous %.1f MiB + file (the binary's pages) %.1f MiB\n\n", mib(m.RSS), mib(m.Anon), mib(m.File))
}
