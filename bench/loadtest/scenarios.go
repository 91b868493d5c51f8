package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// env is one scenario's fakes, sidecar and generator, and a directory for
// wrk's script and vegeta's targets and results.
type env struct {
	fakes     *fakes
	side      *sidecar
	gen       *generator
	dir       string
	wrkScript string
}

// startEnv starts fresh fakes and a fresh sidecar with the given extra
// flags, so that no scenario inherits another's cache or heap.
func startEnv(ctx context.Context, o options, gctrace bool, args ...string) (*env, error) {
	dir, err := os.MkdirTemp("", "loadtest-env")
	if err != nil {
		return nil, err
	}
	script, err := writeWrkScript(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	f := startFakes()
	s, err := startSidecar(ctx, sidecarOptions{binary: o.binary, fakes: f, args: args, logLevel: o.logLevel, log: o.sidecarLog, cpus: o.sidecarCPUs, procs: o.sidecarProcs, gctrace: gctrace})
	if err != nil {
		f.close()
		os.RemoveAll(dir)
		return nil, err
	}
	return &env{fakes: f, side: s, gen: newGenerator(), dir: dir, wrkScript: script}, nil
}

func (e *env) close() error {
	e.gen.closeIdle()
	err := e.side.stop()
	e.fakes.close()
	os.RemoveAll(e.dir)
	return err
}

func (e *env) getURL(tenant string) string {
	return e.side.tokenURL + "/token?tenant=" + url.QueryEscape(tenant)
}

func (e *env) refreshURL(tenant string) string {
	return e.side.tokenURL + "/token/refresh?tenant=" + url.QueryEscape(tenant)
}

// snapshot reads the sidecar's footprint and the fakes' counters.
func (e *env) snapshot(ctx context.Context) snapshot {
	return e.side.snapshot(ctx, e.gen.client, e.fakes)
}

// settle closes the generator's connections, so that the sidecar's
// per-connection goroutines end, and waits d.
func (e *env) settle(ctx context.Context, d time.Duration) {
	e.gen.closeIdle()
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// warm requests each tenant once with workers concurrent requests and fails
// unless every answer is 200.
func (e *env) warm(ctx context.Context, workers int, tenants func(i int64) string, n int64) (runResult, error) {
	res, err := e.gen.closedLoop(ctx, closedSpec{
		workers:  workers,
		duration: 30 * time.Minute,
		count:    n,
		classes:  1,
		next: func(i int64) request {
			return request{method: http.MethodGet, url: e.getURL(tenants(i))}
		},
	})
	if err != nil {
		return res, err
	}
	st := res.rec.total().statuses
	if st["200"] != int(n) {
		return res, fmt.Errorf("warming %d tenants: answers %v", n, st)
	}
	return res, nil
}

// cpuPerRequest divides the sidecar's CPU time over a run by its requests.
// medianRoundRatio is the median of the rounds' hit/static throughput
// ratios (the mean of the two middle ones for an even count); rounds is not
// empty.
func medianRoundRatio(rounds []roundResult) float64 {
	ratios := make([]float64, len(rounds))
	for i, rr := range rounds {
		ratios[i] = rr.Hit.RPS / rr.Static.RPS
	}
	slices.Sort(ratios)
	return (ratios[(len(ratios)-1)/2] + ratios[len(ratios)/2]) / 2
}

func cpuPerRequest(cpu time.Duration, n int64) time.Duration {
	if cpu < 0 || n == 0 {
		return -1
	}
	return cpu / time.Duration(n)
}

// ---- hit-vs-static (issue 3) ----

// throughput is one target's closed-loop figures.
type throughput struct {
	Requests int64   `json:"requests"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	// SidecarCPU is the sidecar's CPU time per request.
	SidecarCPU time.Duration  `json:"sidecar_cpu_per_request_ns"`
	CPU        cpuUse         `json:"cpu"`
	Latency    latencies      `json:"latency"`
	Statuses   map[string]int `json:"statuses"`
}

type roundResult struct {
	Round  int        `json:"round"`
	First  string     `json:"first"`
	Hit    throughput `json:"hit"`
	Static throughput `json:"static"`
}

// openResult is one open-loop run.
type openResult struct {
	Target    string        `json:"target"`
	Rate      int           `json:"rate"`
	Duration  time.Duration `json:"duration_ns"`
	Completed int64         `json:"completed"`
	SentRPS   float64       `json:"sent_rps"`
	// Drain is how long after the last send the last answer came.
	Drain time.Duration `json:"drain_ns"`
	// Latency runs from the scheduled send time: coordinated omission
	// corrected. Service runs from the actual send time.
	Latency  latencies      `json:"latency"`
	Service  latencies      `json:"service_time"`
	PacerLag latencies      `json:"pacer_lag"`
	Statuses map[string]int `json:"statuses"`
	Errors   int64          `json:"errors"`
	// SidecarCPU is the sidecar's CPU time per request.
	SidecarCPU time.Duration `json:"sidecar_cpu_per_request_ns"`
	CPU        cpuUse        `json:"cpu"`
}

type hitVsStaticResult struct {
	Workers int           `json:"workers"`
	Round   time.Duration `json:"round_ns"`
	Rounds  []roundResult `json:"rounds"`
	Hit     throughput    `json:"hit"`
	Static  throughput    `json:"static"`
	// Ratio is hit/static over all rounds; MedianRatio the median of the
	// rounds' ratios, which one disturbed round moves less.
	Ratio       float64 `json:"ratio"`
	MedianRatio float64 `json:"median_round_ratio"`
	// CPURatio is the sidecar's CPU per static request over that per hit:
	// the throughput ratio the sidecar would reach with the CPUs to itself.
	CPURatio float64 `json:"cpu_ratio"`
	// OpenHit and OpenStatic are the open-loop runs at -rate; the /healthz
	// one shows what the machine, the generator and net/http cost by
	// themselves.
	OpenHit      openResult `json:"open_hit"`
	OpenStatic   openResult `json:"open_static"`
	OpenWorkers  int        `json:"open_workers"`
	OpenSegments int        `json:"open_segments"`
	PID          int        `json:"pid"`
}

const hotTenant = "hot-0"

// maxRoundRequests bounds one closed-loop round besides its duration: far
// above what loopback HTTP reaches in a round, but a bound.
const maxRoundRequests = 10_000_000

// startHitEnv starts a sidecar on fresh fakes with hotTenant's token cached,
// and returns the two targets the hit-vs-static comparisons send: "hit", a
// cached GET /token, and "static", the admin listener's /healthz.
func startHitEnv(ctx context.Context, o options) (*env, map[string]request, error) {
	e, err := startEnv(ctx, o, false, "-cache-capacity", strconv.Itoa(o.capacity))
	if err != nil {
		return nil, nil, err
	}
	if _, err := e.warm(ctx, 1, func(int64) string { return hotTenant }, 1); err != nil {
		e.close()
		return nil, nil, err
	}
	return e, map[string]request{
		"hit":    {method: http.MethodGet, url: e.getURL(hotTenant)},
		"static": {method: http.MethodGet, url: e.side.adminURL + "/healthz"},
	}, nil
}

func runHitVsStatic(ctx context.Context, o options, log io.Writer) (*hitVsStaticResult, error) {
	e, targets, err := startHitEnv(ctx, o)
	if err != nil {
		return nil, err
	}
	defer e.close()
	measure := func(name string, d time.Duration) (throughput, error) {
		return e.measureWrk(ctx, targets[name].url, o.workers, d)
	}

	// Open the connections and let both paths warm up before measuring.
	for _, name := range []string{"hit", "static"} {
		if _, err := measure(name, time.Second); err != nil {
			return nil, err
		}
	}
	r := &hitVsStaticResult{Workers: o.workers, Round: o.round, OpenWorkers: o.openWorkers, OpenSegments: o.openSegments, PID: e.side.pid}
	var hitCPU, staticCPU time.Duration
	for i := range o.rounds {
		order := []string{"hit", "static"}
		if i%2 == 1 {
			order = []string{"static", "hit"}
		}
		rr := roundResult{Round: i + 1, First: order[0]}
		for _, name := range order {
			t, err := measure(name, o.round)
			if err != nil {
				return nil, err
			}
			if name == "hit" {
				rr.Hit = t
			} else {
				rr.Static = t
			}
		}
		fmt.Fprintf(log, "loadtest: round %d: hit %.0f req/s, static %.0f req/s\n", rr.Round, rr.Hit.RPS, rr.Static.RPS)
		r.Rounds = append(r.Rounds, rr)
		r.Hit = addThroughput(r.Hit, rr.Hit)
		r.Static = addThroughput(r.Static, rr.Static)
		hitCPU += rr.Hit.CPU.SidecarTime
		staticCPU += rr.Static.CPU.SidecarTime
	}
	r.Hit.SidecarCPU = cpuPerRequest(hitCPU, r.Hit.Requests)
	r.Static.SidecarCPU = cpuPerRequest(staticCPU, r.Static.Requests)
	r.Ratio = r.Hit.RPS / r.Static.RPS
	r.MedianRatio = medianRoundRatio(r.Rounds)
	if r.Hit.SidecarCPU > 0 {
		r.CPURatio = float64(r.Static.SidecarCPU) / float64(r.Hit.SidecarCPU)
	}

	// The open-loop runs alternate too, in segments, so that both targets
	// share whatever else the machine is doing.
	segment := o.openDuration / time.Duration(o.openSegments)
	runs := map[string]runResult{}
	cpus := map[string]cpuUse{}
	for i := range o.openSegments {
		order := []string{"hit", "static"}
		if i%2 == 1 {
			order = []string{"static", "hit"}
		}
		for _, name := range order {
			rq := targets[name]
			meter := startCPUMeter(e.side)
			res, err := e.gen.openLoop(ctx, openSpec{
				rate: o.rate, duration: segment, workers: o.openWorkers, classes: 1,
				next: func(int64) request { return rq },
			})
			if err != nil {
				return nil, err
			}
			runs[name] = runs[name].plus(res)
			cpus[name] = cpus[name].plus(meter.stop())
		}
	}
	r.OpenHit = newOpenResult("hit", o, runs["hit"], cpus["hit"])
	r.OpenStatic = newOpenResult("static", o, runs["static"], cpus["static"])
	return r, nil
}

func newOpenResult(target string, o options, res runResult, cpu cpuUse) openResult {
	t := res.rec.total()
	var errs int64
	for k, v := range t.statuses {
		if k != "200" {
			errs += int64(v)
		}
	}
	return openResult{
		Target: target, Rate: o.rate, Duration: o.openDuration,
		Completed: res.completed, SentRPS: res.sentRate(), Drain: res.drain(),
		Latency: t.latency.summary(), Service: t.service.summary(), PacerLag: res.lag.summary(),
		Statuses: t.statuses, Errors: errs, SidecarCPU: cpuPerRequest(cpu.SidecarTime, res.completed), CPU: cpu,
	}
}

// addThroughput sums two runs of one target: requests and seconds add up,
// so RPS is the overall rate. Latency and CPU are left to the caller.
func addThroughput(a, b throughput) throughput {
	a.Requests += b.Requests
	a.Seconds += b.Seconds
	if a.Seconds > 0 {
		a.RPS = float64(a.Requests) / a.Seconds
	}
	if a.Statuses == nil {
		a.Statuses = map[string]int{}
	}
	for k, v := range b.Statuses {
		a.Statuses[k] += v
	}
	return a
}

// ---- mixed (issue 6) ----

// Request classes of the mixed scenario.
const (
	classHit = iota
	classMiss
	classRefresh
	classNotFound
	classUnavailable
	numClasses
)

var classNames = [numClasses]string{"hit", "miss", "refresh", "notfound", "unavailable"}

// defaultMix keeps the 503 share small: each such request waits for three
// Tenant Service attempts with backoff (about 1.5 s) and holds a worker.
const defaultMix = "hit=90,miss=6,refresh=2,notfound=1.5,unavailable=0.5"

// parseMix reads "class=weight,…" into cumulative fractions by class.
func parseMix(s string) ([numClasses]float64, error) {
	var w [numClasses]float64
	var sum float64
	for part := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		i := slices.Index(classNames[:], name)
		v, err := strconv.ParseFloat(val, 64)
		if !ok || i < 0 || err != nil || v < 0 {
			return w, fmt.Errorf("-mix: %q is not class=weight with a class among %v", part, classNames)
		}
		w[i] = v
		sum += v
	}
	if sum <= 0 {
		return w, fmt.Errorf("-mix %q: weights sum to zero", s)
	}
	var acc float64
	for i := range w {
		acc += w[i] / sum
		w[i] = acc
	}
	return w, nil
}

// splitmix64 is a fast, stateless hash of i, so that request i's class and
// tenant are the same in every run and need no lock.
func splitmix64(i uint64) uint64 {
	z := i + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// pickClass maps i to a class with the cumulative weights.
func pickClass(cum [numClasses]float64, i int64) int {
	u := float64(splitmix64(uint64(i))>>11) / (1 << 53)
	for c, edge := range cum {
		if u < edge {
			return c
		}
	}
	return classHit
}

type classResult struct {
	Class    string         `json:"class"`
	Count    uint64         `json:"count"`
	Latency  latencies      `json:"latency"`
	Service  latencies      `json:"service_time"`
	Statuses map[string]int `json:"statuses"`
}

type mixedResult struct {
	Rate      int           `json:"rate"`
	Duration  time.Duration `json:"duration_ns"`
	Workers   int           `json:"workers"`
	Mix       string        `json:"mix"`
	Hot       int           `json:"hot_tenants"`
	Tenants   int           `json:"miss_tenants"`
	Completed int64         `json:"completed"`
	SentRPS   float64       `json:"sent_rps"`
	Drain     time.Duration `json:"drain_ns"`
	Latency   latencies     `json:"latency"`
	Service   latencies     `json:"service_time"`
	PacerLag  latencies     `json:"pacer_lag"`
	Classes   []classResult `json:"classes"`
	// DistinctMisses is how many different miss tenants were asked for.
	DistinctMisses int64          `json:"distinct_miss_tenants"`
	Statuses       map[string]int `json:"statuses"`
	Upstream       upstreamCalls  `json:"upstream_calls"`
	Before         snapshot       `json:"before"`
	After          snapshot       `json:"after"`
	Warnings       int            `json:"sidecar_warnings"`
	// UpstreamAttempt is the sidecar's mean upstream attempt duration over
	// the run, from /metrics; -1 when not served.
	UpstreamAttempt time.Duration     `json:"upstream_attempt_mean_ns"`
	CPU             cpuUse            `json:"cpu"`
	FirstErrors     map[string]string `json:"first_errors"`
}

func hotName(i int) string { return fmt.Sprintf("hot-%d", i) }

func runMixed(ctx context.Context, o options, log io.Writer) (*mixedResult, error) {
	cum, err := parseMix(o.mix)
	if err != nil {
		return nil, err
	}
	e, err := startEnv(ctx, o, false, "-cache-capacity", strconv.Itoa(o.capacity))
	if err != nil {
		return nil, err
	}
	defer e.close()
	if _, err := e.warm(ctx, o.workers, func(i int64) string { return hotName(int(i)) }, int64(o.hot)); err != nil {
		return nil, err
	}
	e.settle(ctx, o.settle)
	r := &mixedResult{Rate: o.rate, Duration: o.duration, Workers: o.mixedWorkers, Mix: o.mix, Hot: o.hot, Tenants: o.tenants}
	r.Before = e.snapshot(ctx)
	warn0 := e.side.warningCount()
	attempts0, _ := e.side.metrics(ctx, e.gen.client)

	var misses atomic.Int64
	next := func(i int64) request {
		c := pickClass(cum, i)
		h := splitmix64(uint64(i) ^ 0x5bd1e995)
		switch c {
		case classMiss:
			n := misses.Add(1) - 1
			return request{class: c, method: http.MethodGet, url: e.getURL(fmt.Sprintf("miss-%06d", n%int64(o.tenants)))}
		case classRefresh:
			return request{class: c, method: http.MethodPost, url: e.refreshURL(hotName(int(h % uint64(o.hot))))}
		case classNotFound:
			return request{class: c, method: http.MethodGet, url: e.getURL(notFoundTenant(int(h % failingTenants)))}
		case classUnavailable:
			return request{class: c, method: http.MethodGet, url: e.getURL(unavailableTenant(int(h % failingTenants)))}
		}
		return request{class: classHit, method: http.MethodGet, url: e.getURL(hotName(int(h % uint64(o.hot))))}
	}
	// vegeta sends the targets in turn: the whole run's requests, in the
	// order of the mix, each with its class known by its method and URL.
	total := int(float64(o.rate) * o.duration.Seconds())
	if total < 1 || total > maxOpenRequests {
		return nil, fmt.Errorf("mixed: %d req/s × %v is not 1 to %d requests", o.rate, o.duration, maxOpenRequests)
	}
	targets := make([]request, total)
	classOf := map[string]int{}
	for i := range targets {
		targets[i] = next(int64(i))
		classOf[targets[i].method+" "+targets[i].url] = targets[i].class
	}
	fmt.Fprintf(log, "loadtest: mixed: %d req/s for %v (vegeta)\n", o.rate, o.duration)
	meter := startCPUMeter(e.side)
	file, _, err := vegetaAttack(ctx, vegetaSpec{bin: o.vegeta, dir: e.dir, rate: o.rate, duration: o.duration, workers: o.mixedWorkers, procs: o.genProcs, targets: targets})
	if err != nil {
		return nil, err
	}
	r.CPU = meter.stop()
	e.settle(ctx, o.settle)
	r.After = e.snapshot(ctx)
	r.Upstream = r.After.Upstream.minus(r.Before.Upstream)
	r.Warnings = e.side.warningCount() - warn0
	r.UpstreamAttempt = -1
	if attempts1, ok := e.side.metrics(ctx, e.gen.client); ok {
		const name = "token_sidecar_upstream_attempt_duration_seconds"
		sum, n := attempts1[name+"_sum"]-attempts0[name+"_sum"], attempts1[name+"_count"]-attempts0[name+"_count"]
		if n > 0 {
			r.UpstreamAttempt = time.Duration(sum / n * float64(time.Second))
		}
	}
	r.DistinctMisses = min(misses.Load(), int64(o.tenants))
	results, err := vegetaResults(ctx, o.vegeta, file)
	if err != nil {
		return nil, err
	}
	res := runResult{rec: newRecorder(numClasses), completed: int64(len(results)), released: int64(len(results))}
	res.elapsed, res.releaseElapsed = recordVegeta(results, res.rec, &res.lag, o.rate, func(v vegetaResult) int { return classOf[v.method+" "+v.url] })

	t := res.rec.total()
	r.Completed, r.SentRPS, r.Drain = res.completed, res.sentRate(), res.drain()
	r.Latency, r.Service, r.PacerLag, r.Statuses = t.latency.summary(), t.service.summary(), res.lag.summary(), t.statuses
	for i := range res.rec.classes {
		c := &res.rec.classes[i]
		r.Classes = append(r.Classes, classResult{Class: classNames[i], Count: c.latency.n, Latency: c.latency.summary(), Service: c.service.summary(), Statuses: c.statuses})
	}
	r.FirstErrors = res.rec.firstErr
	return r, nil
}

// ---- flood (issue 6) ----

type rssSample struct {
	Requests int64         `json:"requests"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	RSS      int64         `json:"rss_bytes"`
	// Entries and Goroutines are from /metrics, -1 when not served.
	Entries    int64 `json:"cache_entries"`
	Goroutines int64 `json:"goroutines"`
}

type floodResult struct {
	Count     int            `json:"count"`
	Workers   int            `json:"workers"`
	Capacity  int            `json:"cache_capacity"`
	Completed int64          `json:"completed"`
	Seconds   float64        `json:"seconds"`
	RPS       float64        `json:"rps"`
	Latency   latencies      `json:"latency"`
	Statuses  map[string]int `json:"statuses"`
	Samples   []rssSample    `json:"samples"`
	MaxRSS    int64          `json:"max_rss_bytes"`
	// MaxEntries is the most cache entries any sample saw, -1 when
	// /metrics does not export them.
	MaxEntries int64    `json:"max_cache_entries"`
	Before     snapshot `json:"before"`
	End        snapshot `json:"end"`
	After      snapshot `json:"after"`
	// OldestEvicted reports that the first tenant needed a new upstream
	// fetch after the flood (it was evicted); NewestCached that the last
	// one did not.
	CPU           cpuUse            `json:"cpu"`
	OldestEvicted bool              `json:"oldest_evicted"`
	NewestCached  bool              `json:"newest_cached"`
	FirstErrors   map[string]string `json:"first_errors"`
}

func floodTenant(i int64) string { return fmt.Sprintf("flood-%07d", i) }

func runFlood(ctx context.Context, o options, log io.Writer) (*floodResult, error) {
	e, err := startEnv(ctx, o, false, "-cache-capacity", strconv.Itoa(o.capacity))
	if err != nil {
		return nil, err
	}
	defer e.close()
	r := &floodResult{Count: o.floodCount, Workers: o.floodWorkers, Capacity: o.capacity}
	// A few concurrent misses first, so that the baseline already holds the
	// sidecar's idle keep-alive connections to the upstreams (and their
	// goroutines), as it will after the flood.
	if _, err := e.warm(ctx, 8, func(i int64) string { return fmt.Sprintf("baseline-%d", i) }, 64); err != nil {
		return nil, err
	}
	e.settle(ctx, o.settle)
	r.Before = e.snapshot(ctx)

	var mu sync.Mutex
	start := time.Now()
	r.Samples = append(r.Samples, rssSample{RSS: r.Before.RSS, Entries: r.Before.Entries, Goroutines: r.Before.Goroutines})
	progress := func(n int64) {
		if n%int64(o.sampleEvery) != 0 && n != int64(o.floodCount) {
			return
		}
		s := rssSample{Requests: n, Elapsed: time.Since(start), RSS: e.side.rssBytes(), Entries: -1, Goroutines: -1}
		if m, ok := e.side.metrics(ctx, e.gen.client); ok {
			s.Entries, s.Goroutines = firstMetric(m, entriesMetrics), firstMetric(m, goroutineMetrics)
		}
		mu.Lock()
		r.Samples = append(r.Samples, s)
		mu.Unlock()
		if n%int64(max(o.floodCount/20, 1)) < int64(o.sampleEvery) || n == int64(o.floodCount) {
			fmt.Fprintf(log, "loadtest: flood: %d/%d in %v (%.0f req/s), RSS %.1f MiB, entries %s, goroutines %s\n",
				n, o.floodCount, s.Elapsed.Round(time.Second), float64(n)/s.Elapsed.Seconds(), mib(s.RSS), count(s.Entries), count(s.Goroutines))
		}
	}
	meter := startCPUMeter(e.side)
	res, err := e.gen.closedLoop(ctx, closedSpec{
		workers: o.floodWorkers, duration: o.floodTimeout, count: int64(o.floodCount), classes: 1,
		next: func(i int64) request {
			return request{method: http.MethodGet, url: e.getURL(floodTenant(i))}
		},
		progress: progress,
	})
	if err != nil {
		return nil, err
	}
	r.CPU = meter.stop()
	r.End = e.snapshot(ctx)
	slices.SortFunc(r.Samples, func(a, b rssSample) int { return int(a.Requests - b.Requests) })
	r.MaxEntries = -1
	for _, s := range r.Samples {
		r.MaxRSS = max(r.MaxRSS, s.RSS)
		r.MaxEntries = max(r.MaxEntries, s.Entries)
	}
	t := res.rec.total()
	r.Completed, r.Seconds, r.RPS = res.completed, res.elapsed.Seconds(), res.rate()
	r.Latency, r.Statuses, r.FirstErrors = t.latency.summary(), t.statuses, res.rec.firstErr

	e.settle(ctx, o.settle)
	r.After = e.snapshot(ctx)

	// Capacity eviction, seen from outside: the first tenant must cost a new
	// Tenant Service call, the last one must still be cached.
	if o.floodCount > o.capacity {
		oldest, newest := floodTenant(0), floodTenant(res.completed-1)
		o0, n0 := e.fakes.tenants.Calls(oldest, "genesys"), e.fakes.tenants.Calls(newest, "genesys")
		for _, tn := range []string{newest, oldest} {
			if _, err := e.warm(ctx, 1, func(int64) string { return tn }, 1); err != nil {
				return nil, err
			}
		}
		r.OldestEvicted = e.fakes.tenants.Calls(oldest, "genesys") > o0
		r.NewestCached = e.fakes.tenants.Calls(newest, "genesys") == n0
	}
	return r, nil
}

// ---- memory (issue 6) ----

// memPoint is the sidecar's memory at one moment, after forced GC cycles.
type memPoint struct {
	RSS int64 `json:"rss_bytes"`
	// LiveHeapMB is the heap marked live by the last GC (gctrace, 1 MB
	// resolution).
	LiveHeapMB int `json:"live_heap_mb"`
	// HeapBytes is the heap in use from /metrics, -1 when not served.
	HeapBytes int64 `json:"heap_bytes"`
}

type memoryResult struct {
	Tenants  int      `json:"tenants"`
	Capacity int      `json:"cache_capacity"`
	Before   memPoint `json:"before"`
	After    memPoint `json:"after"`
	// Per-tenant costs: the difference divided by Tenants; -1 when unknown.
	PerTenantLiveHeap float64 `json:"per_tenant_live_heap_bytes"`
	PerTenantRSS      float64 `json:"per_tenant_rss_bytes"`
	PerTenantHeap     float64 `json:"per_tenant_metrics_heap_bytes"`
	WarmSeconds       float64 `json:"warm_seconds"`
}

// gcCycles is how many GC cycles the memory scenario waits for before a
// reading: the second one marks a heap that the first has swept.
const gcCycles = 2

// forceGC makes the sidecar collect by giving it garbage to make: /healthz
// requests (a few KiB of short-lived allocations each), until gcCycles new
// cycles have been traced, at most 2M requests or 60 s. The binary cannot be
// told to run runtime.GC, and its own forced GC comes only every 2 minutes.
func (e *env) forceGC(ctx context.Context) (gcCycle, error) {
	want := e.side.gcCount() + gcCycles
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < 1000 && time.Now().Before(deadline); i++ {
		if e.side.gcCount() >= want {
			break
		}
		if _, err := e.gen.closedLoop(ctx, closedSpec{
			workers: 4, duration: time.Second, count: 2000, classes: 1,
			next: func(int64) request {
				return request{method: http.MethodGet, url: e.side.adminURL + "/healthz"}
			},
		}); err != nil {
			return gcCycle{}, err
		}
	}
	// Let the sidecar's stderr reader catch up with the last cycle.
	time.Sleep(200 * time.Millisecond)
	c, ok := e.side.lastGC()
	if !ok || e.side.gcCount() < want {
		return c, fmt.Errorf("the sidecar traced no new GC cycle (gctrace): %d cycles", e.side.gcCount())
	}
	return c, nil
}

func (e *env) memPoint(ctx context.Context) (memPoint, error) {
	e.gen.closeIdle()
	c, err := e.forceGC(ctx)
	if err != nil {
		return memPoint{}, err
	}
	e.gen.closeIdle()
	time.Sleep(time.Second) // let the connections' goroutines and buffers go
	snap := e.snapshot(ctx)
	return memPoint{RSS: snap.RSS, LiveHeapMB: c.liveMB, HeapBytes: snap.HeapBytes}, nil
}

func runMemory(ctx context.Context, o options, log io.Writer) (*memoryResult, error) {
	e, err := startEnv(ctx, o, true, "-cache-capacity", strconv.Itoa(o.memCapacity))
	if err != nil {
		return nil, err
	}
	defer e.close()
	r := &memoryResult{Tenants: o.memTenants, Capacity: o.memCapacity}
	// One tenant first, so that the baseline includes the upstream clients'
	// connections and every lazily built structure of the request path.
	if _, err := e.warm(ctx, 1, func(int64) string { return "mem-baseline" }, 1); err != nil {
		return nil, err
	}
	if r.Before, err = e.memPoint(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "loadtest: memory: warming %d tenants\n", o.memTenants)
	res, err := e.warm(ctx, o.workers, func(i int64) string { return fmt.Sprintf("mem-%06d", i) }, int64(o.memTenants))
	if err != nil {
		return nil, err
	}
	r.WarmSeconds = res.elapsed.Seconds()
	if r.After, err = e.memPoint(ctx); err != nil {
		return nil, err
	}
	n := float64(o.memTenants)
	r.PerTenantLiveHeap = float64(r.After.LiveHeapMB-r.Before.LiveHeapMB) * (1 << 20) / n
	r.PerTenantRSS = float64(r.After.RSS-r.Before.RSS) / n
	r.PerTenantHeap = -1
	if r.Before.HeapBytes >= 0 && r.After.HeapBytes >= 0 {
		r.PerTenantHeap = float64(r.After.HeapBytes-r.Before.HeapBytes) / n
	}
	return r, nil
}
