package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/sharedcache"
	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
)

// The fleet benchmarks run N pods in this process — each its own cache.Cache
// and, with the shared cache on, its own sharedcache.Source and connection
// pool — on one real redis-server. Each pod's upstreams are a counting fake
// that takes fetchDelay per fetch (a Tenant Service call plus an exchange).

const (
	fleetTenants = 1000
	fetchDelay   = 20 * time.Millisecond
	fleetTimeout = time.Second
)

// countingSource counts fetches (one Tenant Service call and one exchange
// each) and answers after delay.
type countingSource struct {
	calls atomic.Int64
	delay time.Duration
}

func (s *countingSource) Fetch(ctx context.Context, req cache.FetchRequest) (cache.Token, error) {
	s.calls.Add(1)
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return cache.Token{}, ctx.Err()
		}
	}
	return fakeToken(time.Now()), nil
}

func keyFile(tb testing.TB) string {
	tb.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	path := filepath.Join(tb.TempDir(), "keys")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// fleetPod is one pod: its cache, and its shared-cache layer if any.
type fleetPod struct {
	c *cache.Cache
	s *sharedcache.Source
}

func newFleetPod(tb testing.TB, inner cache.Source, url, keys string) fleetPod {
	tb.Helper()
	var p fleetPod
	src := inner
	if url != "" {
		// Ten pods' goroutines on this machine's two CPUs starve each
		// other as pods on their own CPUs would not: at the default 200 ms
		// their round trips time out and they fall back to the upstreams
		// (as they must); a longer timeout keeps this a count of what the
		// sharing saves.
		s, err := sharedcache.New(sharedcache.Config{Inner: inner, URL: url, KeyFile: keys, Logger: benchLog(), Timeout: fleetTimeout})
		if err != nil {
			tb.Fatal(err)
		}
		p.s, src = s, s
	}
	c, err := cache.New(cache.Config{Source: src, MaxConcurrentFetches: 64})
	if err != nil {
		tb.Fatal(err)
	}
	p.c = c
	return p
}

func (p fleetPod) close() {
	p.c.Close()
	if p.s != nil {
		p.s.Close()
	}
}

// burst asks every pod for every tenant at once and returns the number of
// failed requests.
func burst(pods []fleetPod, tenants int) int64 {
	var failed atomic.Int64
	var wg sync.WaitGroup
	for _, p := range pods {
		for i := range tenants {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				if _, err := p.c.Get(ctx, cache.Key{Provider: "genesys", Tenant: "tenant-" + strconv.Itoa(i)}); err != nil {
					failed.Add(1)
				}
			})
		}
	}
	wg.Wait()
	return failed.Load()
}

// BenchmarkFleetBurstAndRollout: N pods ask for 1,000 tenants at once, then
// all pods are replaced (a rollout) and the new ones ask again. Reported:
// upstream fetches in the burst and after the rollout, and failures. Run it
// with -benchtime 1x.
func BenchmarkFleetBurstAndRollout(b *testing.B) {
	redis.SetLogger(sharedcache.RedisLogger{Logger: discardLogger()})
	srv := redistest.Start(b)
	rdb := srv.Client()
	keys := keyFile(b)
	for _, n := range []int{1, 3, 10} {
		for _, shared := range []bool{false, true} {
			name := fmt.Sprintf("pods=%d/shared=%v", n, shared)
			b.Run(name, func(b *testing.B) {
				url := ""
				if shared {
					url = srv.URL()
				}
				var burstCalls, rolloutCalls, failed int64
				var burstTime, rolloutTime time.Duration
				for b.Loop() {
					rdb.FlushAll(context.Background())
					inner := &countingSource{delay: fetchDelay}
					pods := make([]fleetPod, n)
					for i := range pods {
						pods[i] = newFleetPod(b, inner, url, keys)
					}
					start := time.Now()
					failed += burst(pods, fleetTenants)
					burstTime += time.Since(start)
					burstCalls += inner.calls.Load()
					for i := range pods {
						pods[i].close()
						pods[i] = newFleetPod(b, inner, url, keys)
					}
					before := inner.calls.Load()
					start = time.Now()
					failed += burst(pods, fleetTenants)
					rolloutTime += time.Since(start)
					rolloutCalls += inner.calls.Load() - before
					for _, p := range pods {
						p.close()
					}
				}
				runs := float64(b.N)
				b.ReportMetric(float64(burstCalls)/runs, "burst-fetches")
				b.ReportMetric(float64(rolloutCalls)/runs, "rollout-fetches")
				b.ReportMetric(float64(failed)/runs, "failed")
				b.ReportMetric(burstTime.Seconds()/runs, "burst-s")
				b.ReportMetric(rolloutTime.Seconds()/runs, "rollout-s")
			})
		}
	}
}

// BenchmarkTokenLatency compares what a token costs a pod: a hit in its own
// cache, a hit in the shared cache (a token another pod fetched: one MGET
// and an AES-GCM open), and a miss with the shared cache on (look-up, lease,
// fetch, write, release) and off, with an upstream that answers at once, so
// that the shared cache's own cost shows.
func BenchmarkTokenLatency(b *testing.B) {
	redis.SetLogger(sharedcache.RedisLogger{Logger: discardLogger()})
	srv := redistest.Start(b)
	keys := keyFile(b)
	ctx := context.Background()
	key := cache.Key{Provider: "genesys", Tenant: "acme"}

	b.Run("pod-local-hit", func(b *testing.B) {
		p := newFleetPod(b, &countingSource{}, srv.URL(), keys)
		defer p.close()
		p.c.Get(ctx, key)
		for b.Loop() {
			if _, err := p.c.Get(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("shared-cache-hit", func(b *testing.B) {
		writer := newFleetPod(b, &countingSource{}, srv.URL(), keys)
		defer writer.close()
		writer.c.Get(ctx, key)
		inner := &countingSource{}
		reader, err := sharedcache.New(sharedcache.Config{Inner: inner, URL: srv.URL(), KeyFile: keys})
		if err != nil {
			b.Fatal(err)
		}
		defer reader.Close()
		for b.Loop() {
			if _, err := reader.Fetch(ctx, cache.FetchRequest{Key: key}); err != nil {
				b.Fatal(err)
			}
		}
		if inner.calls.Load() != 0 {
			b.Fatalf("%d upstream fetches on shared hits", inner.calls.Load())
		}
	})
	for _, shared := range []bool{true, false} {
		b.Run(fmt.Sprintf("miss/shared=%v", shared), func(b *testing.B) {
			url := ""
			if shared {
				url = srv.URL()
			}
			p := newFleetPod(b, &countingSource{}, url, keys)
			defer p.close()
			i := 0
			for b.Loop() {
				i++
				if _, err := p.c.Get(ctx, cache.Key{Provider: "genesys", Tenant: fmt.Sprintf("miss-%v-%d", shared, i)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWaitForLeaseHolder measures what polling costs a pod that waits
// for another pod's fetch of exchange ms: the waiter's delay after the
// holder's token was written, and its polls (MGET+PTTL round trips).
func BenchmarkWaitForLeaseHolder(b *testing.B) {
	redis.SetLogger(sharedcache.RedisLogger{Logger: discardLogger()})
	srv := redistest.Start(b)
	rdb := srv.Client()
	keys := keyFile(b)
	ctx := context.Background()
	for _, exchange := range []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, time.Second} {
		b.Run("exchange="+exchange.String(), func(b *testing.B) {
			holderInner := &countingSource{delay: exchange}
			holder, err := sharedcache.New(sharedcache.Config{Inner: holderInner, URL: srv.URL(), KeyFile: keys})
			if err != nil {
				b.Fatal(err)
			}
			defer holder.Close()
			waiter, err := sharedcache.New(sharedcache.Config{Inner: &countingSource{}, URL: srv.URL(), KeyFile: keys})
			if err != nil {
				b.Fatal(err)
			}
			defer waiter.Close()
			var late time.Duration
			polls0 := commandCalls(b, rdb, "pttl")
			i := 0
			for b.Loop() {
				i++
				key := cache.Key{Provider: "genesys", Tenant: fmt.Sprintf("wait-%s-%d", exchange, i)}
				var wrote time.Time
				done := make(chan struct{})
				go func() {
					holder.Fetch(ctx, cache.FetchRequest{Key: key})
					wrote = time.Now()
					close(done)
				}()
				for holderInner.calls.Load() < int64(i) {
					time.Sleep(100 * time.Microsecond)
				}
				if _, err := waiter.Fetch(ctx, cache.FetchRequest{Key: key}); err != nil {
					b.Fatal(err)
				}
				got := time.Now()
				<-done
				late += got.Sub(wrote)
			}
			b.ReportMetric(float64(late.Microseconds())/float64(b.N)/1000, "ms-late/wait")
			b.ReportMetric(float64(commandCalls(b, rdb, "pttl")-polls0)/float64(b.N), "polls/wait")
		})
	}
}

// BenchmarkPubSubNotify is the alternative to polling: the delay from a
// PUBLISH to its delivery to a subscriber on another connection.
func BenchmarkPubSubNotify(b *testing.B) {
	srv := redistest.Start(b)
	pub := srv.Client()
	sub := srv.Client().Subscribe(context.Background(), "token-sidecar:bench")
	defer sub.Close()
	if _, err := sub.Receive(context.Background()); err != nil {
		b.Fatal(err)
	}
	ch := sub.Channel()
	for b.Loop() {
		if err := pub.Publish(context.Background(), "token-sidecar:bench", "x").Err(); err != nil {
			b.Fatal(err)
		}
		<-ch
	}
}

// commandCalls is the server's count of calls of one command (INFO
// commandstats).
func commandCalls(tb testing.TB, rdb *redis.Client, command string) int64 {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+command+":calls="); ok {
			n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
			return n
		}
	}
	return 0
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// benchLog is the shared cache's log: discarded unless BENCH_SHARED_CACHE_LOG
// is set, which sends it, debug lines included, to stderr.
func benchLog() *slog.Logger {
	if os.Getenv("BENCH_SHARED_CACHE_LOG") == "" {
		return discardLogger()
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
