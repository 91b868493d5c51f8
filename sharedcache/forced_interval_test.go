package sharedcache

import (
	"context"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
)

// The fleet's forced-refresh interval and a pod's own do not add up: a pod
// whose forced refresh the fleet refused (another pod exchanged inside the
// interval) may force again once the fleet's interval is over, not one whole
// interval after its own refused POST.
func TestFleetRefusalEndsWithTheFleetsInterval(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	const iv = 2 * time.Second
	a := newPod(t, srv.URL(), keys, func(c *Config) { c.MinRefreshInterval = iv })
	b := newPod(t, srv.URL(), keys, func(c *Config) { c.MinRefreshInterval = iv })
	ca, err := cache.New(cache.Config{Source: a.Source, MinRefreshInterval: iv})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := cache.New(cache.Config{Source: b.Source, MinRefreshInterval: iv})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	ctx := context.Background()
	t1, err := ca.Get(ctx, key1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.Get(ctx, key1); err != nil {
		t.Fatal(err)
	}
	a.up.fail(errUpstream)
	t0 := time.Now()
	_, err = ca.Refresh(ctx, key1, t1.AccessToken)
	t.Logf("a forced at 0: %v", err)
	time.Sleep(iv - 300*time.Millisecond)
	_, err = cb.Refresh(ctx, key1, t1.AccessToken)
	t.Logf("b forced at %v: %v", time.Since(t0).Round(time.Millisecond), err)
	time.Sleep(600 * time.Millisecond) // fleet interval over
	before := b.up.calls.Load()
	tok, err := cb.Refresh(ctx, key1, t1.AccessToken)
	t.Logf("b forced at %v: tok=%q err=%v", time.Since(t0).Round(time.Millisecond), tok.AccessToken, err)
	if err != nil || b.up.calls.Load() == before {
		t.Errorf("no forced exchange in the fleet for %v, yet b's POST made no exchange", time.Since(t0).Round(time.Millisecond))
	}
}
