package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// request is one request a generator sends, and the class its outcome is
// counted under (an index into the recorder's classes).
type request struct {
	class  int
	method string
	url    string
}

// outcome keys that are not an HTTP status.
const (
	statusTimeout   = "error: timeout"
	statusTransport = "error: transport"
	statusCanceled  = "error: canceled"
)

// generator runs the load loops; each of their workers sends over its own
// rawClient. Its client serves the tool's own reads of the sidecar
// (/metrics), which are not measured.
type generator struct {
	client *http.Client
}

// newGenerator returns a generator whose client keeps a few idle
// connections, with compression and proxies off.
func newGenerator() *generator {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &generator{client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// closeIdle closes the client's idle connections. The loops' connections
// are closed when each loop ends, so that the sidecar can free their
// buffers.
func (g *generator) closeIdle() { g.client.CloseIdleConnections() }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// classStats are the outcomes of one class of requests.
type classStats struct {
	// latency runs from the intended send time (open loop) or the send time
	// (closed loop) to the end of the response body.
	latency histogram
	// service runs from the actual send time; it differs from latency only
	// in an open loop, by the time the request waited for the pacer or a
	// free worker.
	service  histogram
	statuses map[string]int
}

// recorder collects outcomes by class. It is safe for concurrent use: one
// mutex, held for a few hundred nanoseconds per request, costs far less than
// the request.
type recorder struct {
	mu       sync.Mutex
	classes  []classStats
	firstErr map[string]string // outcome key → first error seen
}

func newRecorder(classes int) *recorder {
	r := &recorder{classes: make([]classStats, classes), firstErr: map[string]string{}}
	for i := range r.classes {
		r.classes[i].statuses = map[string]int{}
	}
	return r
}

func (r *recorder) record(class int, intended, sent, done time.Time, status string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &r.classes[class]
	c.latency.record(done.Sub(intended))
	c.service.record(done.Sub(sent))
	c.statuses[status]++
	if err != nil {
		if _, ok := r.firstErr[status]; !ok {
			r.firstErr[status] = err.Error()
		}
	}
}

// merge adds o's outcomes to r's; both have the same classes.
func (r *recorder) merge(o *recorder) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range o.classes {
		c, oc := &r.classes[i], &o.classes[i]
		c.latency.merge(&oc.latency)
		c.service.merge(&oc.service)
		for k, v := range oc.statuses {
			c.statuses[k] += v
		}
	}
	for k, v := range o.firstErr {
		if _, ok := r.firstErr[k]; !ok {
			r.firstErr[k] = v
		}
	}
}

// total merges every class.
func (r *recorder) total() classStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := classStats{statuses: map[string]int{}}
	for i := range r.classes {
		c := &r.classes[i]
		t.latency.merge(&c.latency)
		t.service.merge(&c.service)
		for k, v := range c.statuses {
			t.statuses[k] += v
		}
	}
	return t
}

// runResult is what one generator run did.
type runResult struct {
	rec *recorder
	// completed is the number of requests answered or failed.
	completed int64
	// elapsed runs from the first send to the last completion.
	elapsed time.Duration
	// Open loop only: released is the number of requests the pacer released,
	// by releaseElapsed after the start; lag is how late it released them.
	released       int64
	releaseElapsed time.Duration
	lag            histogram
}

// plus adds another run of the same classes: counts and times add up, so
// rates are over both.
func (r runResult) plus(o runResult) runResult {
	if r.rec == nil {
		return o
	}
	r.rec.merge(o.rec)
	r.completed += o.completed
	r.elapsed += o.elapsed
	r.released += o.released
	r.releaseElapsed += o.releaseElapsed
	r.lag.merge(&o.lag)
	return r
}

// rate is the completions per second of a closed loop.
func (r runResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.completed) / r.elapsed.Seconds()
}

// sentRate is the requests per second an open loop actually released.
func (r runResult) sentRate() float64 {
	if r.releaseElapsed <= 0 {
		return 0
	}
	return float64(r.released) / r.releaseElapsed.Seconds()
}

// drain is how long the last answer came after the last release.
func (r runResult) drain() time.Duration { return r.elapsed - r.releaseElapsed }

// closedSpec is a closed-loop run: workers each send one request, wait for
// the answer and send the next, as fast as the sidecar answers.
type closedSpec struct {
	workers int
	// duration and count bound the run; it stops at whichever comes first.
	// Both must be positive.
	duration time.Duration
	count    int64
	classes  int
	// next builds request number i (0-based); it is called concurrently.
	next func(i int64) request
	// progress, if not nil, is called after each completion with the number
	// of completions so far; it is called concurrently and must be cheap.
	progress func(completed int64)
}

// closedLoop runs spec.
func (g *generator) closedLoop(ctx context.Context, spec closedSpec) (runResult, error) {
	if spec.workers < 1 || spec.duration <= 0 || spec.count <= 0 {
		return runResult{}, fmt.Errorf("closed loop needs workers, a duration and a count, got %d, %v, %d", spec.workers, spec.duration, spec.count)
	}
	rec := newRecorder(spec.classes)
	var seq, completed atomic.Int64
	start := time.Now()
	deadline := start.Add(spec.duration)
	var last atomic.Int64 // unix ns of the last completion
	var wg sync.WaitGroup
	for range spec.workers {
		wg.Go(func() {
			cl := newRawClient(ctx)
			defer cl.close()
			for ctx.Err() == nil {
				i := seq.Add(1) - 1
				if i >= spec.count {
					return
				}
				rq := spec.next(i)
				sent := time.Now()
				if !sent.Before(deadline) {
					return
				}
				status, err := cl.do(rq)
				done := time.Now()
				rec.record(rq.class, sent, sent, done, status, err)
				last.Store(done.UnixNano())
				n := completed.Add(1)
				if spec.progress != nil {
					spec.progress(n)
				}
			}
		})
	}
	wg.Wait()
	res := runResult{rec: rec, completed: completed.Load()}
	if l := last.Load(); l > 0 {
		res.elapsed = time.Unix(0, l).Sub(start)
	}
	return res, ctx.Err()
}

// openSpec is an open-loop run: requests are released on a fixed schedule,
// rate per second, whether or not earlier ones have been answered, and each
// one's latency counts from its scheduled time. A slow answer therefore
// delays no later request's clock, which a closed loop would hide
// (coordinated omission).
type openSpec struct {
	rate     int
	duration time.Duration
	// workers is the most requests in flight; a scheduled request waits,
	// its clock running, when all are busy.
	workers int
	classes int
	next    func(i int64) request
}

// maxOpenRequests bounds one open-loop run, and the job queue with it.
const maxOpenRequests = 5_000_000

// openLoop runs spec. The pacer sleeps until the next scheduled time and
// releases every request that is due; it never waits on the sidecar, since
// the queue holds the whole run.
func (g *generator) openLoop(ctx context.Context, spec openSpec) (runResult, error) {
	total := int64(float64(spec.rate) * spec.duration.Seconds())
	if spec.rate < 1 || spec.workers < 1 || total < 1 || total > maxOpenRequests {
		return runResult{}, fmt.Errorf("open loop needs a rate, workers and 1 to %d requests, got %d/s × %v with %d workers",
			maxOpenRequests, spec.rate, spec.duration, spec.workers)
	}
	interval := time.Second / time.Duration(spec.rate)
	type job struct {
		rq       request
		intended time.Time
	}
	jobs := make(chan job, total)
	rec := newRecorder(spec.classes)
	var completed, last atomic.Int64
	var wg sync.WaitGroup
	for range spec.workers {
		wg.Go(func() {
			cl := newRawClient(ctx)
			defer cl.close()
			for j := range jobs {
				if ctx.Err() != nil {
					continue // drain without sending
				}
				sent := time.Now()
				status, err := cl.do(j.rq)
				done := time.Now()
				rec.record(j.rq.class, j.intended, sent, done, status, err)
				last.Store(done.UnixNano())
				completed.Add(1)
			}
		})
	}

	p, err := newPacer()
	if err != nil {
		close(jobs)
		wg.Wait()
		return runResult{}, err
	}
	defer p.close()
	var lag histogram
	start := time.Now()
	i := int64(0)
	for i < total && ctx.Err() == nil {
		now := time.Now()
		for ; i < total; i++ {
			intended := start.Add(time.Duration(i) * interval)
			if intended.After(now) {
				break
			}
			lag.record(now.Sub(intended))
			jobs <- job{rq: spec.next(i), intended: intended}
		}
		if i < total {
			if err := p.sleep(time.Until(start.Add(time.Duration(i) * interval))); err != nil {
				close(jobs)
				wg.Wait()
				return runResult{}, err
			}
		}
	}
	// The last release was due at (i-1)·interval; one more interval makes
	// the window that i requests at the rate fill.
	releaseElapsed := max(time.Since(start), time.Duration(i)*interval)
	close(jobs)
	wg.Wait()
	res := runResult{rec: rec, completed: completed.Load(), released: i, releaseElapsed: releaseElapsed, lag: lag}
	if l := last.Load(); l > 0 {
		res.elapsed = time.Unix(0, l).Sub(start)
	}
	return res, ctx.Err()
}
