// Command loadtest measures a built token-sidecar binary on loopback, against
// the in-process fake upstreams of upstream/upstreamtest, and prints the
// figures that bench/README.md records:
//
//   - hit-vs-static (issue 3): the most requests per second of cached GET
//     /token hits against GET /healthz of the same process, in alternating
//     closed-loop rounds driven by wrk, then the latency of both at a fixed
//     open-loop rate, driven by the tool's own pacer and HTTP/1.1 client;
//   - mixed (issue 6): hits, misses over many tenants, forced refreshes and
//     failing tenants at a fixed rate, driven by vegeta, with latency,
//     answers by code, upstream calls, RSS and goroutines before and after;
//   - flood (issue 6): a million distinct tenants through a bounded cache,
//     sampling RSS as it goes;
//   - memory (issue 6): the heap and RSS cost of one cached tenant;
//   - idle (issue 14): RSS after one token;
//   - fleet (issue 12): upstream calls of N sidecars on one redis-server;
//   - generators: the closed- and open-loop figures measured with the own
//     generator against wrk and vegeta on one sidecar, which is why each
//     figure uses the generator it does.
//
// Run it from the repository: go run ./bench/loadtest -scenario all. It
// builds ./cmd/token-sidecar unless -binary names one, and the pinned
// vegeta unless -vegeta names one; wrk is Debian's package. It starts a
// fresh sidecar for each scenario on 127.0.0.1 ports and stops it with
// SIGTERM. Every load loop is bounded both in requests and in time; nothing
// leaves loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "loadtest:", err)
		}
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	scenario     string
	binary       string
	json         bool
	genProcs     int
	cpuProf      string
	settle       time.Duration
	logLevel     string
	sidecarCPUs  string
	sidecarProcs int
	logFile      string
	vegeta       string
	sidecarLog   io.Writer // logFile, opened

	// hit-vs-static
	workers      int
	round        time.Duration
	rounds       int
	rate         int
	openDuration time.Duration
	openWorkers  int
	openSegments int
	mixedWorkers int

	// mixed
	duration time.Duration
	tenants  int
	hot      int
	mix      string
	capacity int

	// flood
	floodCount   int
	floodWorkers int
	sampleEvery  int
	floodTimeout time.Duration

	// memory
	memTenants  int
	memCapacity int

	// idle
	idleSidecars int

	// fleet
	fleetPods    []int
	fleetTenants int
	fleetWorkers int
	fleetTimeout time.Duration
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.scenario, "scenario", "all", "hit-vs-static (needs wrk), mixed (vegeta), flood, memory, idle, fleet (needs redis-server), generators (the own generator against wrk and vegeta) or all (hit-vs-static, mixed, memory, then flood)")
	fs.StringVar(&o.binary, "binary", "", "token-sidecar binary to measure; empty builds ./cmd/token-sidecar into a temporary directory")
	fs.BoolVar(&o.json, "json", false, "also print the results as one JSON document")
	fs.IntVar(&o.genProcs, "gen-procs", 1, "GOMAXPROCS of this load generator, which shares the machine with the sidecar (0 = leave the default)")
	fs.StringVar(&o.cpuProf, "cpuprofile", "", "write a CPU profile of the load generator (not the sidecar) to this file")
	fs.StringVar(&o.logLevel, "sidecar-log-level", "info", "-log-level of the sidecar: info or debug; it logs its ports at info, and nothing per request at info but 4xx answers")
	fs.StringVar(&o.logFile, "sidecar-log", "", "append every sidecar's stderr (JSON log lines) to this file")
	fs.IntVar(&o.sidecarProcs, "sidecar-gomaxprocs", 0, "GOMAXPROCS of the sidecar (0 = the Go default: the CPUs it may use), e.g. 1 for what a 1-CPU limit in Kubernetes gives it, without pinning it")
	fs.StringVar(&o.sidecarCPUs, "sidecar-cpus", "", "pin the sidecar to these CPUs with taskset -c (e.g. 1; run the tool itself under taskset -c 0), so that it and the generator do not share CPUs; the sidecar's GOMAXPROCS follows")
	fs.StringVar(&o.vegeta, "vegeta", "", "vegeta binary for the open-loop runs; empty builds "+vegetaModule+" into a temporary directory")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "idle time before the 'after' readings of RSS and goroutines")

	fs.IntVar(&o.workers, "workers", 64, "closed-loop keep-alive connections: wrk's in hit-vs-static, the own generator's in warm-ups")
	fs.DurationVar(&o.round, "round", 3*time.Second, "hit-vs-static: duration of each target in one round (wrk's run; whole seconds)")
	fs.IntVar(&o.rounds, "rounds", 10, "hit-vs-static: rounds, each measuring both targets, in alternating order")
	fs.IntVar(&o.rate, "rate", 5000, "open-loop requests per second (hit-vs-static latency run, mixed)")
	fs.DurationVar(&o.openDuration, "open-duration", 10*time.Second, "hit-vs-static: duration of the open-loop latency run")
	fs.IntVar(&o.openSegments, "open-segments", 5, "hit-vs-static: the open-loop runs alternate between the targets in this many segments each")
	fs.IntVar(&o.openWorkers, "open-workers", 32, "hit-vs-static open loop: most requests in flight (a due request waits, its clock running, when all are busy)")

	fs.DurationVar(&o.duration, "duration", 30*time.Second, "mixed: duration of the run")
	fs.IntVar(&o.tenants, "tenants", 10000, "mixed: distinct tenants the misses cycle through")
	fs.IntVar(&o.mixedWorkers, "mixed-workers", 256, "mixed: most requests in flight; failing tenants hold one each for seconds")
	fs.IntVar(&o.hot, "hot", 100, "mixed: tenants in the hot set (warmed first; hits and forced refreshes)")
	fs.StringVar(&o.mix, "mix", defaultMix, "mixed: weights of the request classes")
	fs.IntVar(&o.capacity, "cache-capacity", 10000, "-cache-capacity of the sidecar in hit-vs-static, mixed and flood")

	fs.IntVar(&o.floodCount, "flood-count", 1_000_000, "flood: distinct tenants requested, one GET each")
	fs.IntVar(&o.floodWorkers, "flood-workers", 128, "flood: concurrent requests")
	fs.IntVar(&o.sampleEvery, "sample-every", 10_000, "flood: read the sidecar's RSS every this many requests")
	fs.DurationVar(&o.floodTimeout, "flood-timeout", 60*time.Minute, "flood: stop after this long even if requests remain")

	fs.IntVar(&o.memTenants, "memory-tenants", 20000, "memory: tenants warmed")
	fs.IntVar(&o.memCapacity, "memory-capacity", 30000, "memory: -cache-capacity of the sidecar (above -memory-tenants, so nothing is evicted)")
	fs.IntVar(&o.idleSidecars, "idle-sidecars", 1, "idle: sidecars of the same binary started and read together (they share the binary's file pages, as the sidecars of one image on a node do)")
	fleetPods := fs.String("fleet-pods", "1,3,10", "fleet: the fleet sizes to run, comma-separated")
	fs.IntVar(&o.fleetTenants, "fleet-tenants", 1000, "fleet: tenants every sidecar asks for in the burst")
	fs.IntVar(&o.fleetWorkers, "fleet-workers", 64, "fleet: requests in flight per sidecar")
	fs.DurationVar(&o.fleetTimeout, "fleet-shared-cache-timeout", time.Second, "fleet: -shared-cache-timeout of the sidecars (the default 200ms times out when ten sidecars share two CPUs)")

	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, p := range strings.Split(*fleetPods, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-fleet-pods: %q is not a positive count", p)
		}
		o.fleetPods = append(o.fleetPods, n)
	}
	switch o.scenario {
	case "hit-vs-static", "mixed", "flood", "memory", "idle", "fleet", "generators", "all":
	default:
		return o, fmt.Errorf("unknown -scenario %q", o.scenario)
	}
	if o.workers < 1 || o.openWorkers < 1 || o.mixedWorkers < 1 || o.floodWorkers < 1 || o.rounds < 1 || o.openSegments < 1 || o.rate < 1 ||
		o.tenants < 1 || o.hot < 1 || o.floodCount < 1 || o.sampleEvery < 1 || o.memTenants < 1 || o.idleSidecars < 1 {
		return o, errors.New("counts, workers and rates must be positive")
	}
	if o.round < time.Second || o.round%time.Second != 0 {
		return o, errors.New("-round must be whole seconds: wrk runs for whole seconds")
	}
	if o.sidecarProcs < 0 {
		return o, errors.New("-sidecar-gomaxprocs must be 0 or positive")
	}
	if _, err := parseMix(o.mix); err != nil {
		return o, err
	}
	return o, nil
}

// run is the whole command; tests call it with small figures.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	if o.genProcs > 0 {
		runtime.GOMAXPROCS(o.genProcs)
	}
	if o.cpuProf != "" {
		f, err := os.Create(o.cpuProf)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if o.logFile != "" {
		f, err := os.OpenFile(o.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		o.sidecarLog = f
	}
	dir, err := os.MkdirTemp("", "loadtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.binary == "" {
		fmt.Fprintln(stderr, "loadtest: building ./cmd/token-sidecar")
		if o.binary, err = buildSidecar(ctx, dir); err != nil {
			return err
		}
	}
	if o.vegeta == "" && slices.Contains([]string{"mixed", "generators", "all"}, o.scenario) {
		fmt.Fprintln(stderr, "loadtest: building", vegetaModule)
		if o.vegeta, err = installVegeta(ctx, dir); err != nil {
			return err
		}
	}

	rep := newReport(o)
	rep.header(stdout)
	scenarios := []string{o.scenario}
	if o.scenario == "all" {
		scenarios = []string{"hit-vs-static", "mixed", "memory", "flood"}
	}
	for _, name := range scenarios {
		fmt.Fprintf(stderr, "loadtest: scenario %s\n", name)
		var err error
		switch name {
		case "hit-vs-static":
			rep.HitVsStatic, err = runHitVsStatic(ctx, o, stderr)
			if err == nil {
				rep.printHitVsStatic(stdout)
			}
		case "mixed":
			rep.Mixed, err = runMixed(ctx, o, stderr)
			if err == nil {
				rep.printMixed(stdout)
			}
		case "memory":
			rep.Memory, err = runMemory(ctx, o, stderr)
			if err == nil {
				rep.printMemory(stdout)
			}
		case "flood":
			rep.Flood, err = runFlood(ctx, o, stderr)
			if err == nil {
				rep.printFlood(stdout)
			}
		case "fleet":
			rep.Fleet, err = runFleet(ctx, o, stderr)
			if err == nil {
				rep.printFleet(stdout)
			}
		case "generators":
			rep.Generators, err = runGenerators(ctx, o, stderr)
			if err == nil {
				rep.printGenerators(stdout)
			}
		case "idle":
			rep.Idle, err = runIdle(ctx, o, stderr)
			if err == nil {
				rep.printIdle(stdout)
			}
		}
		if err != nil {
			return fmt.Errorf("scenario %s: %w", name, err)
		}
	}
	if o.json {
		return rep.writeJSON(stdout)
	}
	return nil
}
