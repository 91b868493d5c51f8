package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"
)

// The generators scenario measures the same figures with the tool's own
// generator and with wrk (closed loop) and vegeta (open loop), on one
// sidecar, in alternating rounds.

type genClosed struct {
	Gen         string        `json:"generator"`
	Rounds      []roundResult `json:"rounds"`
	Hit         throughput    `json:"hit"`
	Static      throughput    `json:"static"`
	Ratio       float64       `json:"ratio"`
	MedianRatio float64       `json:"median_round_ratio"`
	CPURatio    float64       `json:"cpu_ratio"`
}

type genOpen struct {
	Gen string `json:"generator"`
	openResult
}

type generatorsResult struct {
	Workers      int           `json:"workers"`
	Round        time.Duration `json:"round_ns"`
	Closed       []*genClosed  `json:"closed"`
	Open         []genOpen     `json:"open"`
	OpenWorkers  int           `json:"open_workers"`
	OpenSegments int           `json:"open_segments"`
	Rate         int           `json:"rate"`
}

func runGenerators(ctx context.Context, o options, log io.Writer) (*generatorsResult, error) {
	e, targets, err := startHitEnv(ctx, o)
	if err != nil {
		return nil, err
	}
	defer e.close()
	measure := func(gen, name string, d time.Duration) (throughput, error) {
		rq := targets[name]
		if gen == "tool" {
			return e.measureWrk(ctx, rq.url, o.workers, d)
		}
		meter := startCPUMeter(e.side)
		res, err := e.gen.closedLoop(ctx, closedSpec{workers: o.workers, duration: d, count: maxRoundRequests, classes: 1,
			next: func(int64) request { return rq }})
		if err != nil {
			return throughput{}, err
		}
		cpu := meter.stop()
		t := res.rec.total()
		return throughput{Requests: res.completed, Seconds: res.elapsed.Seconds(), RPS: res.rate(),
			SidecarCPU: cpuPerRequest(cpu.SidecarTime, res.completed), CPU: cpu, Latency: t.latency.summary(), Statuses: t.statuses}, nil
	}
	// "tool" is wrk in the closed loop, vegeta in the open loop.
	gens := []string{"own", "tool"}
	for _, g := range gens {
		for _, name := range []string{"hit", "static"} {
			if _, err := measure(g, name, time.Second); err != nil {
				return nil, err
			}
		}
	}
	r := &generatorsResult{Workers: o.workers, Round: o.round, OpenWorkers: o.openWorkers, OpenSegments: o.openSegments, Rate: o.rate}
	closed := map[string]*genClosed{}
	for _, g := range gens {
		label := g
		if g == "tool" {
			label = "wrk"
		}
		closed[g] = &genClosed{Gen: label}
		r.Closed = append(r.Closed, closed[g])
	}
	for i := range o.rounds {
		names, order := []string{"hit", "static"}, slices.Clone(gens)
		if i%2 == 1 {
			names = []string{"static", "hit"}
		}
		if i%4 >= 2 {
			slices.Reverse(order)
		}
		rr := map[string]*roundResult{}
		for _, g := range gens {
			rr[g] = &roundResult{Round: i + 1, First: names[0]}
		}
		for _, name := range names {
			for _, g := range order {
				t, err := measure(g, name, o.round)
				if err != nil {
					return nil, err
				}
				if name == "hit" {
					rr[g].Hit = t
				} else {
					rr[g].Static = t
				}
			}
		}
		for _, g := range gens {
			c, x := closed[g], rr[g]
			fmt.Fprintf(log, "loadtest: round %d %s: hit %.0f req/s, static %.0f req/s\n", x.Round, c.Gen, x.Hit.RPS, x.Static.RPS)
			c.Rounds = append(c.Rounds, *x)
			c.Hit, c.Static = addThroughput(c.Hit, x.Hit), addThroughput(c.Static, x.Static)
			c.Hit.CPU, c.Static.CPU = c.Hit.CPU.plus(x.Hit.CPU), c.Static.CPU.plus(x.Static.CPU)
		}
	}
	for _, c := range r.Closed {
		c.Hit.SidecarCPU = cpuPerRequest(c.Hit.CPU.SidecarTime, c.Hit.Requests)
		c.Static.SidecarCPU = cpuPerRequest(c.Static.CPU.SidecarTime, c.Static.Requests)
		c.Ratio = c.Hit.RPS / c.Static.RPS
		c.MedianRatio = medianRoundRatio(c.Rounds)
		if c.Hit.SidecarCPU > 0 {
			c.CPURatio = float64(c.Static.SidecarCPU) / float64(c.Hit.SidecarCPU)
		}
	}

	// Open loop: own pacer and vegeta, both targets, alternating segments.
	segment := o.openDuration / time.Duration(o.openSegments)
	runs := map[string]runResult{}
	cpus := map[string]cpuUse{}
	for i := range o.openSegments {
		names, order := []string{"hit", "static"}, slices.Clone(gens)
		if i%2 == 1 {
			names = []string{"static", "hit"}
		}
		if i%4 >= 2 {
			slices.Reverse(order)
		}
		for _, name := range names {
			for _, g := range order {
				rq := targets[name]
				key := g + "/" + name
				meter := startCPUMeter(e.side)
				var res runResult
				if g == "tool" {
					file, _, err := vegetaAttack(ctx, vegetaSpec{bin: o.vegeta, dir: e.dir, rate: o.rate, duration: segment, workers: o.openWorkers, procs: o.genProcs, targets: []request{rq}})
					if err != nil {
						return nil, err
					}
					cpus[key] = cpus[key].plus(meter.stop())
					vr, err := vegetaResults(ctx, o.vegeta, file)
					if err != nil {
						return nil, err
					}
					res = runResult{rec: newRecorder(1), completed: int64(len(vr)), released: int64(len(vr))}
					res.elapsed, res.releaseElapsed = recordVegeta(vr, res.rec, &res.lag, o.rate, func(vegetaResult) int { return 0 })
				} else {
					res, err = e.gen.openLoop(ctx, openSpec{rate: o.rate, duration: segment, workers: o.openWorkers, classes: 1,
						next: func(int64) request { return rq }})
					if err != nil {
						return nil, err
					}
					cpus[key] = cpus[key].plus(meter.stop())
				}
				runs[key] = runs[key].plus(res)
			}
		}
	}
	for _, g := range gens {
		for _, name := range []string{"hit", "static"} {
			key := g + "/" + name
			gn := g
			if g == "tool" {
				gn = "vegeta"
			}
			r.Open = append(r.Open, genOpen{Gen: gn, openResult: newOpenResult(name, o, runs[key], cpus[key])})
		}
	}
	return r, nil
}

func (r *report) printGenerators(w io.Writer) {
	g := r.Generators
	fmt.Fprintf(w, "== generators: closed loop, %d connections, %v per target per round, %d rounds; own generator vs wrk, alternating\n", g.Workers, g.Round, len(g.Closed[0].Rounds))
	rows := []string{"generator\thit req/s\tstatic req/s\tratio\tmedian of rounds\tsidecar CPU µs hit\tstatic\tCPU ratio\tcores sidecar/gen/other (hit)\t(static)"}
	for _, c := range g.Closed {
		rows = append(rows, fmt.Sprintf("%s\t%.0f\t%.0f\t%.3f\t%.3f\t%s\t%s\t%.3f\t%s\t%s", c.Gen, c.Hit.RPS, c.Static.RPS, c.Ratio, c.MedianRatio,
			us(c.Hit.SidecarCPU), us(c.Static.SidecarCPU), c.CPURatio, cores(c.Hit.CPU), cores(c.Static.CPU)))
	}
	table(w, rows...)
	rows = []string{"round\tgenerator\thit req/s\tstatic req/s\tratio\tcores (hit)\t(static)"}
	for i := range g.Closed[0].Rounds {
		for _, c := range g.Closed {
			x := c.Rounds[i]
			rows = append(rows, fmt.Sprintf("%d\t%s\t%.0f\t%.0f\t%.3f\t%s\t%s", x.Round, c.Gen, x.Hit.RPS, x.Static.RPS, x.Hit.RPS/x.Static.RPS, cores(x.Hit.CPU), cores(x.Static.CPU)))
		}
	}
	table(w, rows...)
	fmt.Fprintf(w, "\nopen loop: %d req/s, %d segments per generator and target, at most %d in flight; latency from the scheduled send time\n", g.Rate, g.OpenSegments, g.OpenWorkers)
	rows = []string{"generator\ttarget\tsent/s\t" + latencyHeader() + "\tservice p50 ms\tservice p99 ms\tlag p50 ms\tlag p99 ms\terrors\tsidecar CPU µs/req\tcores sidecar/gen/other"}
	for _, x := range g.Open {
		rows = append(rows, fmt.Sprintf("%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s", x.Gen, x.Target, x.SentRPS, latencyRow(x.Latency),
			ms(x.Service.P50), ms(x.Service.P99), ms(x.PacerLag.P50), ms(x.PacerLag.P99), x.Errors, us(x.SidecarCPU), cores(x.CPU)))
	}
	table(w, rows...)
	fmt.Fprintln(w)
}
