package cache

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// holdFirstEnd is a span processor that holds the end of the first span,
// until release is closed: the flight that span belongs to has applied its
// outcome and released its state, but has not yet left the singleflight
// group.
type holdFirstEnd struct {
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (h *holdFirstEnd) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (h *holdFirstEnd) OnEnd(sdktrace.ReadOnlySpan) {
	h.once.Do(func() {
		close(h.held)
		<-h.release
	})
}
func (h *holdFirstEnd) Shutdown(context.Context) error   { return nil }
func (h *holdFirstEnd) ForceFlush(context.Context) error { return nil }

// A flight of a released state that has not left the singleflight group
// yet is not joined by the next state of the same key: that state's first
// flight runs a fetch of its own, and the flights after it are found.
func TestNewStateDoesNotJoinTheFlightOfAReleasedOne(t *testing.T) {
	hold := &holdFirstEnd{held: make(chan struct{}), release: make(chan struct{})}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(hold))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	var calls int
	var mu sync.Mutex
	c, src, _, _ := newScriptedCache(t, time.Hour, func(FetchRequest, int64) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return errUnavailable // not cached: the state is released
		}
		return nil
	}, func(cfg *Config) { cfg.TracerProvider = tp })

	first := make(chan error, 1)
	go func() {
		_, err := c.Get(context.Background(), tenantA)
		first <- err
	}()
	<-hold.held
	waitFor(t, "the first state to be released", func() bool { return c.stateOf(tenantA) == nil })

	second := make(chan error, 1)
	go func() {
		_, err := c.Get(context.Background(), tenantA)
		second <- err
	}()
	waitFor(t, "the second fetch", func() bool { return src.calls.Load() == 2 })
	close(hold.release)
	if err := <-first; err == nil {
		t.Fatal("the first Get got a token from a failed fetch")
	}
	if err := <-second; err != nil {
		t.Fatalf("the second Get: %v", err)
	}
	if tok, err := c.Get(context.Background(), tenantA); err != nil || tok.AccessToken == "" {
		t.Fatalf("a Get after both: %v, %v", tok, err)
	}
}

// A flight keeps its state alive until it has left the singleflight group:
// its name holds the state's address, which a new state of the key must
// not take while a caller could still join that flight by name.
func TestFlightKeepsItsStateUntilItLeavesTheGroup(t *testing.T) {
	hold := &holdFirstEnd{held: make(chan struct{}), release: make(chan struct{})}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(hold))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	collected := make(chan struct{})
	var c *Cache
	var once sync.Once
	c, _, _, _ = newScriptedCache(t, time.Hour, func(FetchRequest, int64) error {
		once.Do(func() {
			runtime.SetFinalizer(c.stateOf(tenantA), func(*state) { close(collected) })
		})
		return errUnavailable // not cached: the state is released
	}, func(cfg *Config) { cfg.TracerProvider = tp })

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, tenantA)
		first <- err
	}()
	<-hold.held
	waitFor(t, "the state to be released", func() bool { return c.stateOf(tenantA) == nil })
	cancel() // the caller gives up: only the flight holds the state
	<-first
	for range 5 {
		runtime.GC()
	}
	select {
	case <-collected:
		t.Error("the state of a flight still in the group was collected: a new state could take its address, and its flight's name")
	case <-time.After(10 * time.Millisecond):
	}
	close(hold.release)
}
