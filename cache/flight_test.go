package cache

import (
	"context"
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
