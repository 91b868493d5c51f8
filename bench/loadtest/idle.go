package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// idleReading is one sidecar's memory at rest.
type idleReading struct {
	// RSS is VmRSS; Anon and File split it into the process's own pages
	// (heap, stacks, written data) and the pages of its binary mapped in
	// (clean, shared by every process running the same file).
	RSS  int64 `json:"rss_bytes"`
	Anon int64 `json:"rss_anon_bytes"`
	File int64 `json:"rss_file_bytes"`
	// Pss is the proportional set size (/proc/PID/smaps_rollup): each page
	// counted divided by the number of processes that map it. With N
	// sidecars of one binary on a node, PssFile ≈ File/N, so Pss is what
	// one more pod costs the node. PssAnon ≈ Anon.
	Pss     int64 `json:"pss_bytes"`
	PssAnon int64 `json:"pss_anon_bytes"`
	PssFile int64 `json:"pss_file_bytes"`
}

// idleResult is the idle scenario's reading: fresh sidecars after one
// token each, their connections to the generator closed, -settle later.
// The embedded reading is the mean over Sidecars.
type idleResult struct {
	idleReading
	// Sidecars holds each sidecar's reading: -idle-sidecars processes of
	// the same binary, started together and idle together.
	Sidecars []idleReading `json:"sidecars"`
	// SettleSeconds is how long the sidecars sat idle before the reading.
	SettleSeconds float64 `json:"settle_seconds"`
}

// runIdle measures what a sidecar costs at rest (issue 14): -idle-sidecars
// sidecars of one binary, each with its own fakes, one tenant's token
// fetched from each, then nothing. All are started before any is read, so
// that the binary's file pages are shared by all of them when Pss is read.
func runIdle(ctx context.Context, o options, log io.Writer) (*idleResult, error) {
	n := max(o.idleSidecars, 1)
	envs := make([]*env, 0, n)
	defer func() {
		for _, e := range envs {
			e.close()
		}
	}()
	for range n {
		e, err := startEnv(ctx, o, false)
		if err != nil {
			return nil, err
		}
		envs = append(envs, e)
		if _, err := e.warm(ctx, 1, func(int64) string { return "idle-tenant" }, 1); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(log, "loadtest: idle: %d sidecar(s), one token fetched from each; settling %s\n", n, o.settle)
	for _, e := range envs {
		e.gen.closeIdle()
	}
	envs[0].settle(ctx, o.settle)

	res := &idleResult{SettleSeconds: o.settle.Seconds()}
	var sum idleReading
	for _, e := range envs {
		r, err := readIdle(e.side)
		if err != nil {
			return nil, err
		}
		res.Sidecars = append(res.Sidecars, r)
		sum.RSS += r.RSS
		sum.Anon += r.Anon
		sum.File += r.File
		sum.Pss += r.Pss
		sum.PssAnon += r.PssAnon
		sum.PssFile += r.PssFile
	}
	k := int64(len(res.Sidecars))
	res.idleReading = idleReading{RSS: sum.RSS / k, Anon: sum.Anon / k, File: sum.File / k, Pss: sum.Pss / k, PssAnon: sum.PssAnon / k, PssFile: sum.PssFile / k}
	return res, nil
}

// readIdle reads a sidecar's /proc/PID/status and smaps_rollup.
func readIdle(s *sidecar) (idleReading, error) {
	kib := func(field string) int64 {
		n, err := s.procStatus(field)
		if err != nil {
			return -1
		}
		return n << 10
	}
	r := idleReading{RSS: kib("VmRSS"), Anon: kib("RssAnon"), File: kib("RssFile")}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", s.pid))
	if err != nil {
		return r, err
	}
	pss, err := parseRollup(b, "Pss", "Pss_Anon", "Pss_File")
	if err != nil {
		return r, fmt.Errorf("/proc/%d/smaps_rollup: %w", s.pid, err)
	}
	r.Pss, r.PssAnon, r.PssFile = pss[0], pss[1], pss[2]
	return r, nil
}

// parseRollup returns the named "Name: value kB" fields of a smaps_rollup,
// in bytes, in the order asked; a field that is missing is an error.
func parseRollup(b []byte, fields ...string) ([]int64, error) {
	out := make([]int64, len(fields))
	found := make([]bool, len(fields))
	for line := range bytes.Lines(b) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		for i, f := range fields {
			if string(name) != f {
				continue
			}
			v := strings.Fields(string(value))
			if len(v) != 2 || v[1] != "kB" {
				return nil, fmt.Errorf("%s: %q is not a count of kB", f, bytes.TrimSpace(value))
			}
			n, err := strconv.ParseInt(v[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			out[i], found[i] = n<<10, true
		}
	}
	var missing []string
	for i, ok := range found {
		if !ok {
			missing = append(missing, fields[i])
		}
	}
	if len(missing) > 0 {
		return nil, errors.New("no " + strings.Join(missing, ", "))
	}
	return out, nil
}

func (r *report) printIdle(w io.Writer) {
	m := r.Idle
	fmt.Fprintf(w, "== idle (issue 14): %d sidecar(s) of one binary, one token fetched from each, connections closed, %.0f s idle\n", len(m.Sidecars), m.SettleSeconds)
	for i, s := range m.Sidecars {
		fmt.Fprintf(w, "sidecar %d: RSS %.1f MiB = anonymous %.1f MiB + file (the binary's pages) %.1f MiB; PSS %.1f MiB = anonymous %.1f MiB + file %.1f MiB\n",
			i+1, mib(s.RSS), mib(s.Anon), mib(s.File), mib(s.Pss), mib(s.PssAnon), mib(s.PssFile))
	}
	fmt.Fprintf(w, "mean: RSS %.1f MiB = anonymous %.1f MiB + file %.1f MiB; PSS (per-pod cost on a node running %d) %.1f MiB = anonymous %.1f MiB + file %.1f MiB\n\n",
		mib(m.RSS), mib(m.Anon), mib(m.File), len(m.Sidecars), mib(m.Pss), mib(m.PssAnon), mib(m.PssFile))
}
