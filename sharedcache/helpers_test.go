package sharedcache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/token-sidecar/token-sidecar/cache"
)

// newKey is a random base64 key as the key file holds them.
func newKey(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// writeKeyFile writes keys, one per line, to a file in t's temp dir.
func writeKeyFile(t testing.TB, keys ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(path, []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// upstream is a fake inner Source: it numbers the tokens it mints per key,
// counts its calls and can be held or made to fail.
type upstream struct {
	calls    atomic.Int64
	lifetime time.Duration
	// gate, when non-nil, is received from before each fetch answers.
	gate chan struct{}
	// started, when non-nil, is sent to when a fetch starts.
	started chan struct{}
	mu      sync.Mutex
	err     error
}

func newUpstream() *upstream { return &upstream{lifetime: time.Hour} }

func (u *upstream) Fetch(ctx context.Context, req cache.FetchRequest) (cache.Token, error) {
	n := u.calls.Add(1)
	if u.started != nil {
		u.started <- struct{}{}
	}
	if u.gate != nil {
		select {
		case <-u.gate:
		case <-ctx.Done():
			return cache.Token{}, ctx.Err()
		}
	}
	u.mu.Lock()
	err := u.err
	u.mu.Unlock()
	if err != nil {
		return cache.Token{}, err
	}
	// Later tokens expire later, as fresh tokens do.
	return cache.Token{
		AccessToken: fmt.Sprintf("access-%s-%s-%d", req.Key.Provider, req.Key.Tenant, n),
		TokenType:   "bearer",
		ExpiresAt:   time.Now().Add(u.lifetime + time.Duration(n)*time.Millisecond),
		Lifetime:    u.lifetime,
		APIBaseURL:  "https://api.example.test",
	}, nil
}

func (u *upstream) fail(err error) {
	u.mu.Lock()
	u.err = err
	u.mu.Unlock()
}

var errUpstream = errors.New("upstream unavailable")

// pod is one sidecar's Source with its own metrics and log.
type pod struct {
	*Source
	up     *upstream
	reader *sdkmetric.ManualReader
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newPod builds a Source on url and keyFile; change edits its Config.
func newPod(t testing.TB, url, keyFile string, change ...func(*Config)) *pod {
	t.Helper()
	p := &pod{up: newUpstream(), reader: sdkmetric.NewManualReader(), logs: &syncBuffer{}}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(p.reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	cfg := Config{
		Inner:         p.up,
		URL:           url,
		KeyFile:       keyFile,
		Logger:        slog.New(slog.NewJSONHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MeterProvider: mp,
	}
	for _, f := range change {
		f(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	p.Source = s
	return p
}

var key1 = cache.Key{Provider: "genesys", Tenant: "tenant-a"}

func miss(key cache.Key) cache.FetchRequest {
	return cache.FetchRequest{Key: key, Reason: cache.ReasonMiss}
}

func mustFetch(t testing.TB, p *pod, req cache.FetchRequest) cache.Token {
	t.Helper()
	tok, err := p.Fetch(context.Background(), req)
	if err != nil {
		t.Fatalf("Fetch(%v): %v", req.Reason, err)
	}
	return tok
}

// counter sums the data points of the named counter whose attributes hold
// attr=value (any when attr is "").
func (p *pod) counter(t testing.TB, name, attr, value string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := p.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				t.Fatalf("%s is a %T", name, m.Data)
			}
			for _, dp := range sum.DataPoints {
				if v, ok := dp.Attributes.Value(attributeKey(attr)); attr == "" || (ok && v.AsString() == value) {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// gauge is the value of the named int64 gauge.
func (p *pod) gauge(t testing.TB, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := p.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				g := m.Data.(metricdata.Gauge[int64])
				return g.DataPoints[0].Value
			}
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

// eventually polls cond until it holds or 10 s have passed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func attributeKey(s string) attribute.Key { return attribute.Key(s) }

// same reports whether two tokens are the same token (time.Time's == also
// compares monotonic readings and locations, which a sealed copy drops).
func same(a, b cache.Token) bool {
	return a.AccessToken == b.AccessToken && a.TokenType == b.TokenType && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.Lifetime == b.Lifetime && a.APIBaseURL == b.APIBaseURL
}
