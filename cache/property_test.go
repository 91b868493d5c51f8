package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// chaosSource is a Source with random delays, transient and terminal
// failures and lifetimes, that numbers its calls in the order they start
// and records when (on the fake clock) each forced exchange called it.
type chaosSource struct {
	clock *clock
	mu    sync.Mutex
	rng   *rand.Rand
	n     int
	down  bool // every call fails transiently
	heal  bool // no failures at all
	// forcedAt are the fake-clock times of the forced calls, per key.
	forcedAt map[Key][]time.Time
}

func (s *chaosSource) Fetch(ctx context.Context, req FetchRequest) (Token, error) {
	s.mu.Lock()
	s.n++
	n := s.n
	now := s.clock.Now()
	if req.Reason == ReasonForced {
		s.forcedAt[req.Key] = append(s.forcedAt[req.Key], now)
	}
	delay := time.Duration(s.rng.IntN(1500)) * time.Microsecond
	roll := s.rng.IntN(100)
	lifetime := time.Duration(30+s.rng.IntN(150)) * time.Second
	down, heal := s.down, s.heal
	s.mu.Unlock()
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
	switch {
	case heal:
	case down || roll < 15:
		return Token{}, errUnavailable
	case roll < 20:
		return Token{}, errNotFound
	}
	return Token{
		AccessToken: fmt.Sprintf("%s/%s#%d", req.Key.Provider, req.Key.Tenant, n),
		TokenType:   "bearer",
		ExpiresAt:   now.Add(lifetime),
		Lifetime:    lifetime,
	}, nil
}

// tokenNumber is the call number in a chaosSource token.
func tokenNumber(t *testing.T, tok Token) int {
	t.Helper()
	_, num, ok := strings.Cut(tok.AccessToken, "#")
	n, err := strconv.Atoi(num)
	if !ok || err != nil {
		t.Fatalf("malformed token %q", tok.AccessToken)
	}
	return n
}

// TestStateMachineInvariants drives Get, Refresh, expiry and eviction from
// many goroutines against a Source with random delays and failures, in
// rounds at a fixed fake time, and checks what must always hold:
//
//   - a caller never gets another key's token;
//   - never a token inside its safety margin;
//   - writes apply in order: within one state record, a later generation
//     holds a token from a Source call that started later;
//   - at most one forced exchange per key per MinRefreshInterval;
//   - once the Source recovers, every key is served again.
func TestStateMachineInvariants(t *testing.T) {
	const (
		workers  = 8
		rounds   = 150
		interval = 5 * time.Second
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	clk := newClock()
	src := &chaosSource{clock: clk, rng: rand.New(rand.NewPCG(seed, 2)), forcedAt: map[Key][]time.Time{}}
	c, err := New(Config{
		Source:               src,
		Now:                  clk.Now,
		AfterFunc:            clk.AfterFunc,
		Capacity:             4,
		NegativeCapacity:     2,
		NegativeTTL:          3 * time.Second,
		MinRefreshInterval:   interval,
		MaxConcurrentFetches: 3,
		IsNegative:           func(err error) bool { return errors.Is(err, errNotFound) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	keys := []Key{{"genesys", "a"}, {"genesys", "b"}, {"genesys", "c"}, {"whatsapp", "a"}, {"genesys", "d"}, {"genesys", "e"}}

	var failures sync.Mutex
	var problems []string
	fail := func(format string, args ...any) {
		failures.Lock()
		defer failures.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	check := func(key Key, tok Token, before time.Time, what string) {
		if !strings.HasPrefix(tok.AccessToken, key.Provider+"/"+key.Tenant+"#") {
			fail("%s(%v) = another key's token %q", what, key, tok.AccessToken)
		}
		if !before.Before(tok.UsableUntil()) {
			fail("%s(%v) = %q inside its margin", what, key, tok.AccessToken)
		}
	}

	// The watcher samples every key's state record and checks that the
	// generations and the Source call numbers grow together.
	type seen struct {
		gen uint32
		num int
	}
	last := map[*state]seen{}
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			for _, key := range keys {
				s := c.stateOf(key)
				if s == nil {
					continue
				}
				v := s.view.Load()
				if v.usableUntil == 0 || v.neg != nil {
					continue
				}
				num := tokenNumber(t, v.tok)
				if p, ok := last[s]; ok && ((v.gen > p.gen && num <= p.num) || (v.gen < p.gen)) {
					fail("%v: generation %d holds call #%d after generation %d held #%d", key, v.gen, num, p.gen, p.num)
				}
				last[s] = seen{v.gen, num}
			}
			time.Sleep(50 * time.Microsecond)
		}
	}()

	for round := range rounds {
		if round == rounds/2 {
			src.mu.Lock()
			src.down = true // an outage in the middle
			src.mu.Unlock()
		}
		if round == rounds/2+20 {
			src.mu.Lock()
			src.down = false
			src.mu.Unlock()
		}
		var wg sync.WaitGroup
		for w := range workers {
			ops := rand.New(rand.NewPCG(seed, uint64(3+round*workers+w)))
			wg.Go(func() {
				var held Token
				for range 5 {
					key := keys[ops.IntN(len(keys))]
					before := clk.Now()
					switch ops.IntN(10) {
					case 0, 1:
						refused := ""
						if ops.IntN(2) == 0 {
							refused = held.AccessToken
						}
						if tok, err := c.Refresh(context.Background(), key, refused); err == nil {
							check(key, tok, before, "Refresh")
						}
					default:
						ctx := context.Background()
						if ops.IntN(10) == 0 {
							var cancel context.CancelFunc
							ctx, cancel = context.WithTimeout(ctx, time.Millisecond) // a caller that gives up
							defer cancel()
						}
						if tok, err := c.Get(ctx, key); err == nil {
							check(key, tok, before, "Get")
							held = tok
						}
					}
				}
			})
		}
		wg.Wait()
		clk.Advance(time.Duration(rng.IntN(8000)) * time.Millisecond)
	}

	// Recovery: no more failures; past every negative entry and forced
	// interval, every key is served again. A fetch of the last round that
	// a caller gave up on may still run, with the failure it drew before
	// the recovery: it ends first, or a Get after the recovery would join it.
	waitFor(t, "the last round's fetches to end", func() bool {
		for _, key := range keys {
			if s := c.stateOf(key); s != nil {
				s.mu.Lock()
				running := s.normalRunning || s.forcedRunning || s.refreshing
				s.mu.Unlock()
				if running {
					return false
				}
			}
		}
		return true
	})
	src.mu.Lock()
	src.heal = true
	src.mu.Unlock()
	clk.Advance(interval)
	for _, key := range keys {
		before := clk.Now()
		tok, err := c.Get(context.Background(), key)
		if err != nil {
			fail("after recovery Get(%v) = %v", key, err)
			continue
		}
		check(key, tok, before, "Get after recovery")
	}
	close(stopWatch)
	<-watched

	src.mu.Lock()
	for key, times := range src.forcedAt {
		for i := 1; i < len(times); i++ {
			if d := times[i].Sub(times[i-1]); d < interval {
				fail("%v: two forced exchanges %v apart, within the %v interval", key, d, interval)
			}
		}
	}
	src.mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
}
