package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets of issues 3 and 6.
const (
	targetRatio      = 0.85
	targetP99        = time.Millisecond
	targetPerTenantB = 2048
)

// report gathers every scenario's result, prints each as a table as soon as
// it is done, and all of them as JSON at the end.
type report struct {
	Date         string             `json:"date"`
	GoVersion    string             `json:"go_version"`
	CPUs         int                `json:"cpus"`
	GenProcs     int                `json:"generator_gomaxprocs"`
	SidecarCPUs  string             `json:"sidecar_cpus,omitempty"`
	SidecarProcs int                `json:"sidecar_gomaxprocs,omitempty"`
	Command      string             `json:"command"`
	Binary       string             `json:"binary"`
	HitVsStatic  *hitVsStaticResult `json:"hit_vs_static,omitempty"`
	Mixed        *mixedResult       `json:"mixed,omitempty"`
	Memory       *memoryResult      `json:"memory,omitempty"`
	Flood        *floodResult       `json:"flood,omitempty"`
	Fleet        *fleetResult       `json:"fleet,omitempty"`
	Idle         *idleResult        `json:"idle,omitempty"`
	Generators   *generatorsResult  `json:"generators,omitempty"`

	settle time.Duration
}

func newReport(o options) *report {
	return &report{
		Date:         time.Now().UTC().Format(time.RFC3339),
		GoVersion:    runtime.Version(),
		CPUs:         runtime.NumCPU(),
		GenProcs:     runtime.GOMAXPROCS(0),
		Command:      strings.Join(os.Args, " "),
		Binary:       o.binary,
		settle:       o.settle,
		SidecarCPUs:  o.sidecarCPUs,
		SidecarProcs: o.sidecarProcs,
	}
}

func (r *report) header(w io.Writer) {
	pin := ""
	if r.SidecarCPUs != "" {
		pin = ", sidecar pinned to CPUs " + r.SidecarCPUs
	}
	if r.SidecarProcs > 0 {
		pin += fmt.Sprintf(", sidecar GOMAXPROCS=%d", r.SidecarProcs)
	}
	fmt.Fprintf(w, "token-sidecar load test — %s, %s, %d CPUs for the generator, GOMAXPROCS=%d%s, load average %.2f\n\n",
		r.Date, r.GoVersion, r.CPUs, r.GenProcs, pin, loadAvg())
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// table writes aligned columns; rows are tab-separated.
func table(w io.Writer, rows ...string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	for _, row := range rows {
		fmt.Fprintln(tw, row+"\t")
	}
	tw.Flush()
}

// ms formats a duration in milliseconds with µs precision.
func ms(d time.Duration) string {
	if d < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond))
}

func us(d time.Duration) string {
	if d < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Microsecond))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func mibs(b int64) string {
	if b < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", mib(b))
}

func count(n int64) string {
	if n < 0 {
		return "n/a"
	}
	return fmt.Sprint(n)
}

// cores prints a run's CPU use as sidecar/generator/other cores.
func cores(u cpuUse) string {
	return fmt.Sprintf("%.2f/%.2f/%.2f", u.Sidecar, u.Generator, u.Other)
}

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "MISSED"
}

// statuses prints outcome counts, most frequent first.
func statuses(m map[string]int) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func latencyHeader() string { return "p50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms" }

func latencyRow(l latencies) string {
	return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max))
}

func (r *report) printHitVsStatic(w io.Writer) {
	h := r.HitVsStatic
	fmt.Fprintf(w, "== hit-vs-static (issue 3): closed loop on wrk, %d keep-alive connections, %v per target per round, sidecar pid %d\n",
		h.Workers, h.Round, h.PID)
	rows := []string{"round\tfirst\thit req/s\tstatic req/s\tratio\thit CPU µs/req\tstatic CPU µs/req\tcores sidecar/gen/other (hit)\t(static)"}
	for _, rr := range h.Rounds {
		rows = append(rows, fmt.Sprintf("%d\t%s\t%.0f\t%.0f\t%.3f\t%s\t%s\t%s\t%s", rr.Round, rr.First, rr.Hit.RPS, rr.Static.RPS,
			rr.Hit.RPS/rr.Static.RPS, us(rr.Hit.SidecarCPU), us(rr.Static.SidecarCPU), cores(rr.Hit.CPU), cores(rr.Static.CPU)))
	}
	rows = append(rows, fmt.Sprintf("all\t\t%.0f\t%.0f\t%.3f\t%s\t%s\t\t", h.Hit.RPS, h.Static.RPS, h.Ratio,
		us(h.Hit.SidecarCPU), us(h.Static.SidecarCPU)))
	table(w, rows...)
	// The generator's own cost per request is the same for both targets and
	// shares the CPUs, which pulls the throughput ratio towards 1 unless the
	// sidecar has CPUs to itself (-sidecar-cpus); the CPU ratio does not.
	fmt.Fprintf(w, "throughput ratio hit/static = %.3f, median of rounds %.3f (target ≥ %.2f: %s); sidecar CPU per request static/hit = %.3f (%s)\n",
		h.Ratio, h.MedianRatio, targetRatio, verdict(h.Ratio >= targetRatio), h.CPURatio, verdict(h.CPURatio >= targetRatio))
	fmt.Fprintf(w, "answers: hit {%s}, static {%s}\n\n", statuses(h.Hit.Statuses), statuses(h.Static.Statuses))

	fmt.Fprintf(w, "open loop on the own pacer and client: %d req/s for %v per target, in %d alternating segments, at most %d in flight; latency from the scheduled send time\n",
		h.OpenHit.Rate, h.OpenHit.Duration, h.OpenSegments, h.OpenWorkers)
	rows = []string{"target\tsent/s\t" + latencyHeader() + "\tservice p99 ms\tpacer lag p99 ms\terrors\tsidecar CPU µs/req\tcores sidecar/gen/other"}
	for _, o := range []openResult{h.OpenHit, h.OpenStatic} {
		rows = append(rows, fmt.Sprintf("%s\t%.0f\t%s\t%s\t%s\t%d\t%s\t%s", o.Target, o.SentRPS, latencyRow(o.Latency),
			ms(o.Service.P99), ms(o.PacerLag.P99), o.Errors, us(o.SidecarCPU), cores(o.CPU)))
	}
	table(w, rows...)
	fmt.Fprintf(w, "hit p99 = %s ms (target < %s ms: %s); answers {%s}\n\n", ms(h.OpenHit.Latency.P99), ms(targetP99),
		verdict(h.OpenHit.Latency.P99 < targetP99 && h.OpenHit.Errors == 0), statuses(h.OpenHit.Statuses))
}

func (r *report) printMixed(w io.Writer) {
	m := r.Mixed
	fmt.Fprintf(w, "== mixed (issue 6): open loop on vegeta, %d req/s for %v, at most %d in flight, mix %s, %d hot tenants, misses over %d tenants\n",
		m.Rate, m.Duration, m.Workers, m.Mix, m.Hot, m.Tenants)
	rows := []string{"class\trequests\t" + latencyHeader() + "\tservice p50 ms\tservice p99 ms\tanswers"}
	for _, c := range m.Classes {
		rows = append(rows, fmt.Sprintf("%s\t%d\t%s\t%s\t%s\t%s", c.Class, c.Count, latencyRow(c.Latency),
			ms(c.Service.P50), ms(c.Service.P99), statuses(c.Statuses)))
	}
	rows = append(rows, fmt.Sprintf("all\t%d\t%s\t%s\t%s\t", m.Completed, latencyRow(m.Latency), ms(m.Service.P50), ms(m.Service.P99)))
	table(w, rows...)
	fmt.Fprintf(w, "sent %.0f req/s, last answer %s ms after the last send; service-time p99 %s ms; pacer lag p99 %s ms; distinct miss tenants %d\n",
		m.SentRPS, ms(m.Drain), ms(m.Service.P99), ms(m.PacerLag.P99), m.DistinctMisses)
	fmt.Fprintf(w, "answers: {%s}\n", statuses(m.Statuses))
	fmt.Fprintf(w, "upstream calls during the run: Tenant Service %d, login %d; mean upstream attempt (sidecar /metrics) %s ms; sidecar warn/error log lines %d\n",
		m.Upstream.TenantService, m.Upstream.Login, ms(m.UpstreamAttempt), m.Warnings)
	fmt.Fprintf(w, "CPU cores used, sidecar/generator/other processes: %s\n", cores(m.CPU))
	printSnapshots(w, []string{"before", "after"}, m.Before, m.After)
	printFirstErrors(w, m.FirstErrors)
	fmt.Fprintln(w)
}

func printSnapshots(w io.Writer, names []string, snaps ...snapshot) {
	rows := []string{"\tRSS MiB\tgoroutines\tOS threads\theap alloc MiB\tcache entries"}
	for i, s := range snaps {
		rows = append(rows, fmt.Sprintf("%s\t%s\t%s\t%d\t%s\t%s", names[i], mibs(s.RSS), count(s.Goroutines), s.Threads, mibs(s.HeapBytes), count(s.Entries)))
	}
	table(w, rows...)
}

func printFirstErrors(w io.Writer, errs map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		fmt.Fprintf(w, "first %s: %s\n", k, errs[k])
	}
}

func (r *report) printFlood(w io.Writer) {
	f := r.Flood
	fmt.Fprintf(w, "== flood (issue 6): %d distinct tenants, %d concurrent, -cache-capacity %d\n", f.Count, f.Workers, f.Capacity)
	fmt.Fprintf(w, "completed %d in %.1f s (%.0f req/s); latency %s ms p50, %s ms p99, %s ms p99.9; answers {%s}\n",
		f.Completed, f.Seconds, f.RPS, ms(f.Latency.P50), ms(f.Latency.P99), ms(f.Latency.P999), statuses(f.Statuses))
	rows := []string{"requests\telapsed s\tRSS MiB\tcache entries\tgoroutines"}
	for _, m := range []int64{0, 100_000, 500_000, int64(f.Count)} {
		if s, ok := sampleAt(f.Samples, m); ok && (m == 0 || s.Requests > 0) {
			rows = append(rows, fmt.Sprintf("%d\t%.1f\t%.1f\t%s\t%s", s.Requests, s.Elapsed.Seconds(), mib(s.RSS), count(s.Entries), count(s.Goroutines)))
		}
	}
	rows = append(rows, fmt.Sprintf("after %v idle\t\t%.1f\t%s\t%s", r.settle, mib(f.After.RSS), count(f.After.Entries), count(f.After.Goroutines)))
	table(w, rows...)
	fmt.Fprintf(w, "max over %d samples: RSS %.1f MiB, cache entries %s (capacity %d); CPU cores used, sidecar/generator/other processes: %s\n",
		len(f.Samples), mib(f.MaxRSS), count(f.MaxEntries), f.Capacity, cores(f.CPU))
	printSnapshots(w, []string{"before", "end", "after"}, f.Before, f.End, f.After)
	if f.Count > f.Capacity {
		fmt.Fprintf(w, "capacity eviction: first tenant re-fetched from upstream: %v; last tenant still cached: %v\n",
			f.OldestEvicted, f.NewestCached)
	}
	printFirstErrors(w, f.FirstErrors)
	fmt.Fprintln(w)
}

// sampleAt is the first sample at or after n requests.
func sampleAt(samples []rssSample, n int64) (rssSample, bool) {
	for _, s := range samples {
		if s.Requests >= n {
			return s, true
		}
	}
	return rssSample{}, false
}

func (r *report) printMemory(w io.Writer) {
	m := r.Memory
	fmt.Fprintf(w, "== memory (issue 6): %d tenants warmed into -cache-capacity %d (%.1f s); readings after %d forced GC cycles\n",
		m.Tenants, m.Capacity, m.WarmSeconds, gcCycles)
	rows := []string{"\tRSS MiB\tlive heap MiB (gctrace)\theap alloc MiB (/metrics)"}
	rows = append(rows,
		fmt.Sprintf("1 tenant\t%.1f\t%d\t%s", mib(m.Before.RSS), m.Before.LiveHeapMB, mibs(m.Before.HeapBytes)),
		fmt.Sprintf("%d tenants\t%.1f\t%d\t%s", m.Tenants+1, mib(m.After.RSS), m.After.LiveHeapMB, mibs(m.After.HeapBytes)))
	table(w, rows...)
	perHeap := "n/a"
	if m.PerTenantHeap >= 0 {
		perHeap = fmt.Sprintf("%.0f B", m.PerTenantHeap)
	}
	fmt.Fprintf(w, "per tenant: live heap %.0f B (±%.0f B: gctrace rounds to 1 MiB), RSS %.0f B, /metrics heap %s (target ≤ %d B: %s by live heap)\n\n",
		m.PerTenantLiveHeap, float64(1<<20)/float64(m.Tenants), m.PerTenantRSS, perHeap, targetPerTenantB,
		verdict(m.PerTenantLiveHeap <= targetPerTenantB))
}
