package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// wrk drives the closed-loop throughput runs: wrk 4.1 (Debian's package
// wrk), one thread, keep-alive connections, each sending its next request
// as soon as the answer is read.

// wrkSummaryScript makes wrk print one line of exact counts when it is done
// (its human summary rounds the duration to 10 ms).
const wrkSummaryScript = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("wrk-summary duration_us=%d requests=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
`

// wrkRun is what one wrk run did.
type wrkRun struct {
	Requests int64
	Duration time.Duration
	// Errors are socket errors (connect, read, write, timeout) and answers
	// other than 2xx or 3xx (status), by kind.
	Errors map[string]int64
	// Latency is wrk's own, from the send of each request.
	P50, P99, Max time.Duration
	// CPU is wrk's user plus system time.
	CPU time.Duration
}

func (r wrkRun) rate() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Duration.Seconds()
}

// failures is the sum of Errors.
func (r wrkRun) failures() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// wrkSpec is one closed-loop run against one URL.
type wrkSpec struct {
	url         string
	connections int
	duration    time.Duration
	// script is the Lua summary script's path (writeWrkScript).
	script string
}

// writeWrkScript writes the summary script into dir.
func writeWrkScript(dir string) (string, error) {
	p := filepath.Join(dir, "summary.lua")
	return p, os.WriteFile(p, []byte(wrkSummaryScript), 0o644)
}

// errNoWrk says how to get wrk.
var errNoWrk = errors.New("wrk is not installed (apt-get install -y wrk)")

// runWrk runs wrk once. wrk reads its duration in whole seconds: s.duration
// is rounded up to one. It sends X-Token-Request: true, as a token client
// must.
func runWrk(ctx context.Context, s wrkSpec) (wrkRun, error) {
	if _, err := exec.LookPath("wrk"); err != nil {
		return wrkRun{}, errNoWrk
	}
	secs := max(1, int((s.duration+time.Second-1)/time.Second))
	cmd := exec.CommandContext(ctx, "wrk", "-t", "1", "-c", strconv.Itoa(s.connections), "-d", strconv.Itoa(secs)+"s",
		"--timeout", "30s", "-H", "X-Token-Request: true", "-s", s.script, s.url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return wrkRun{}, fmt.Errorf("wrk: %w\n%s%s", err, stdout.Bytes(), stderr.Bytes())
	}
	r, err := parseWrkSummary(stdout.String())
	if err != nil {
		return r, fmt.Errorf("%w\n%s", err, stdout.Bytes())
	}
	r.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, nil
}

// parseWrkSummary reads the line wrkSummaryScript prints.
func parseWrkSummary(out string) (wrkRun, error) {
	for line := range strings.Lines(out) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "wrk-summary ")
		if !ok {
			continue
		}
		v := map[string]int64{}
		for _, kv := range strings.Fields(rest) {
			k, val, ok := strings.Cut(kv, "=")
			n, err := strconv.ParseInt(val, 10, 64)
			if !ok || err != nil {
				return wrkRun{}, fmt.Errorf("wrk summary: bad field %q", kv)
			}
			v[k] = n
		}
		for _, k := range []string{"duration_us", "requests", "connect", "read", "write", "status", "timeout"} {
			if _, ok := v[k]; !ok {
				return wrkRun{}, fmt.Errorf("wrk summary: no %s", k)
			}
		}
		r := wrkRun{
			Requests: v["requests"],
			Duration: time.Duration(v["duration_us"]) * time.Microsecond,
			Errors:   map[string]int64{},
			P50:      time.Duration(v["p50_us"]) * time.Microsecond,
			P99:      time.Duration(v["p99_us"]) * time.Microsecond,
			Max:      time.Duration(v["max_us"]) * time.Microsecond,
		}
		for _, k := range []string{"connect", "read", "write", "status", "timeout"} {
			if v[k] > 0 {
				r.Errors[k] = v[k]
			}
		}
		return r, nil
	}
	return wrkRun{}, errors.New("wrk printed no summary line")
}

// wrkAnswered is the outcome key of wrk's answers that are not errors: it
// counts 2xx and 3xx alike.
const wrkAnswered = "2xx or 3xx"

// measureWrk runs wrk against url for d and returns its throughput, with
// the CPU the sidecar, wrk and the rest of the machine used meanwhile.
func (e *env) measureWrk(ctx context.Context, url string, connections int, d time.Duration) (throughput, error) {
	meter := startCPUMeter(e.side)
	w, err := runWrk(ctx, wrkSpec{url: url, connections: connections, duration: d, script: e.wrkScript})
	if err != nil {
		return throughput{}, err
	}
	cpu := meter.stop()
	st := map[string]int{wrkAnswered: int(w.Requests - w.Errors["status"])}
	for k, v := range w.Errors {
		st["wrk "+k+" errors"] = int(v)
	}
	return throughput{
		Requests: w.Requests, Seconds: w.Duration.Seconds(), RPS: w.rate(),
		SidecarCPU: cpuPerRequest(cpu.SidecarTime, w.Requests), CPU: cpu,
		Latency:  latencies{Count: uint64(w.Requests), P50: w.P50, P99: w.P99, Max: w.Max},
		Statuses: st,
	}, nil
}
