package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The fleet scenario (issue 12): N sidecar processes on one redis-server and
// one set of fakes ask for the same tenants in a burst; then every sidecar is
// stopped and replaced (a rollout) and the new ones ask again. It counts the
// upstream calls, with the shared cache off and on.

// fleetRow is one (pods, shared) configuration.
type fleetRow struct {
	Pods         int           `json:"pods"`
	Shared       bool          `json:"shared_cache"`
	Burst        upstreamCalls `json:"burst_upstream_calls"`
	Rollout      upstreamCalls `json:"rollout_upstream_calls"`
	BurstTime    time.Duration `json:"burst_ns"`
	RolloutTime  time.Duration `json:"rollout_ns"`
	Failed       int           `json:"failed_requests"`
	SharedErrors int           `json:"shared_cache_fallbacks"`
}

type fleetResult struct {
	Tenants int        `json:"tenants"`
	Timeout string     `json:"shared_cache_timeout"`
	Rows    []fleetRow `json:"rows"`
}

// redisServer is a redis-server process on a free loopback port, nothing
// persisted.
type redisServer struct {
	cmd  *exec.Cmd
	addr string
}

func startRedis(ctx context.Context) (*redisServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.CommandContext(ctx, "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("redis-server (apt-get install -y redis-server): %w", err)
	}
	r := &redisServer{cmd: cmd, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", r.addr, 100*time.Millisecond); err == nil {
			c.Close()
			return r, nil
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, errors.New("redis-server did not listen within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *redisServer) stop() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

func runFleet(ctx context.Context, o options, log io.Writer) (*fleetResult, error) {
	srv, err := startRedis(ctx)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr, DisableIdentity: true})
	defer rdb.Close()
	dir, err := os.MkdirTemp("", "loadtest-fleet")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	key := make([]byte, 32)
	rand.Read(key)
	keyFile := filepath.Join(dir, "keys")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}

	res := &fleetResult{Tenants: o.fleetTenants, Timeout: o.fleetTimeout.String()}
	for _, n := range o.fleetPods {
		for _, shared := range []bool{false, true} {
			fmt.Fprintf(log, "loadtest: fleet of %d, shared cache %v\n", n, shared)
			if err := rdb.FlushAll(ctx).Err(); err != nil {
				return nil, err
			}
			var extra []string
			if shared {
				extra = []string{
					"SIDECAR_SHARED_CACHE_URL=redis://" + srv.addr,
					"SIDECAR_SHARED_CACHE_KEY_FILE=" + keyFile,
					"SIDECAR_SHARED_CACHE_TIMEOUT=" + o.fleetTimeout.String(),
				}
			}
			row, err := fleetRun(ctx, o, n, extra)
			if err != nil {
				return nil, err
			}
			row.Shared = shared
			res.Rows = append(res.Rows, row)
		}
	}
	return res, nil
}

// fleetRun runs one configuration on fresh fakes: the burst, the rollout,
// the burst again.
func fleetRun(ctx context.Context, o options, n int, extraEnv []string) (fleetRow, error) {
	row := fleetRow{Pods: n}
	f := startFakes()
	defer f.close()
	start := func() ([]*sidecar, error) {
		pods := make([]*sidecar, n)
		for i := range pods {
			s, err := startSidecar(ctx, sidecarOptions{binary: o.binary, fakes: f, logLevel: o.logLevel, log: o.sidecarLog, procs: o.sidecarProcs, extraEnv: extraEnv})
			if err != nil {
				stopAll(pods)
				return nil, err
			}
			pods[i] = s
		}
		return pods, nil
	}
	for phase := range 2 {
		pods, err := start()
		if err != nil {
			return row, err
		}
		before := f.calls()
		t0 := time.Now()
		failed, fallbacks := fleetBurst(ctx, o, pods)
		took := time.Since(t0)
		calls := f.calls().minus(before)
		row.Failed += failed
		row.SharedErrors += fallbacks
		if phase == 0 {
			row.Burst, row.BurstTime = calls, took
		} else {
			row.Rollout, row.RolloutTime = calls, took
		}
		stopAll(pods)
	}
	return row, nil
}

func stopAll(pods []*sidecar) {
	var wg sync.WaitGroup
	for _, p := range pods {
		if p != nil {
			wg.Go(func() { _ = p.stop() })
		}
	}
	wg.Wait()
}

// fleetBurst asks every pod for every tenant at once (o.fleetWorkers
// requests in flight per pod) and returns the requests that did not get a
// 200, and the pods' shared-cache fallbacks.
func fleetBurst(ctx context.Context, o options, pods []*sidecar) (failed, fallbacks int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Go(func() {
			g := newGenerator()
			defer g.closeIdle()
			res, err := g.closedLoop(ctx, closedSpec{
				workers:  o.fleetWorkers,
				duration: 10 * time.Minute,
				count:    int64(o.fleetTenants),
				classes:  1,
				next: func(i int64) request {
					return request{method: http.MethodGet, url: p.tokenURL + "/token?tenant=fleet-" + strconv.FormatInt(i, 10)}
				},
			})
			bad := o.fleetTenants
			if err == nil {
				bad -= res.rec.total().statuses["200"]
			}
			fb := 0
			if m, ok := p.metrics(ctx, g.client); ok {
				fb = int(m["token_sidecar_shared_cache_fallbacks_total"])
			}
			mu.Lock()
			failed += bad
			fallbacks += fb
			mu.Unlock()
		})
	}
	wg.Wait()
	return failed, fallbacks
}

func (r *report) printFleet(w io.Writer) {
	f := r.Fleet
	fmt.Fprintf(w, "\n== fleet: %d tenants asked by every sidecar in a burst, then again after all were replaced (shared-cache timeout %s)\n", f.Tenants, f.Timeout)
	fmt.Fprintf(w, "%5s %7s %22s %22s %8s %10s %10s %10s\n", "pods", "shared", "burst ts/login calls", "rollout ts/login calls", "failed", "fallbacks", "burst", "rollout")
	for _, row := range f.Rows {
		fmt.Fprintf(w, "%5d %7v %22s %22s %8d %10d %10s %10s\n", row.Pods, row.Shared,
			fmt.Sprintf("%d / %d", row.Burst.TenantService, row.Burst.Login),
			fmt.Sprintf("%d / %d", row.Rollout.TenantService, row.Rollout.Login),
			row.Failed, row.SharedErrors, row.BurstTime.Round(time.Millisecond), row.RolloutTime.Round(time.Millisecond))
	}
}
