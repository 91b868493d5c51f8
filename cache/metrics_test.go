package cache

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// collect reads every metric of reader as "name{k=v,…}" → value: the sum of
// a counter, the value of a gauge, the count of a histogram.
func collect(t *testing.T, reader sdkmetric.Reader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	name := func(m string, set attribute.Set) string {
		var kv []string
		for _, a := range set.ToSlice() {
			kv = append(kv, string(a.Key)+"="+a.Value.String())
		}
		sort.Strings(kv)
		return m + "{" + strings.Join(kv, ",") + "}"
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[name(m.Name, p.Attributes)] += float64(p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[name(m.Name, p.Attributes)] = float64(p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[name(m.Name, p.Attributes)] += float64(p.Count)
				}
			}
		}
	}
	return out
}

func newInstrumentedCache(t *testing.T, lifetime time.Duration, mod func(*Config)) (*Cache, *source, *clock, *sdkmetric.ManualReader, *tracetest.SpanRecorder) {
	reader := sdkmetric.NewManualReader()
	spans := tracetest.NewSpanRecorder()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	c, src, clk, _ := newTestCache(t, lifetime, func(cfg *Config) {
		cfg.MeterProvider = mp
		cfg.TracerProvider = tp
		if mod != nil {
			mod(cfg)
		}
	})
	return c, src, clk, reader, spans
}

func TestMetricsCountEachEvent(t *testing.T) {
	c, src, clk, reader, _ := newInstrumentedCache(t, 100*time.Second, func(cfg *Config) {
		cfg.MinRefreshInterval = 5 * time.Second
		cfg.Capacity = 2
	})
	ctx := context.Background()
	mustGet(t, c, tenantA) // miss
	mustGet(t, c, tenantA) // hit
	clk.Advance(85 * time.Second)
	mustGet(t, c, tenantA) // stale hit, refresh ahead
	waitFor(t, "the refresh ahead", func() bool { return src.calls.Load() == 2 })
	mustGet(t, c, Key{"whatsapp", "a"}) // miss
	if _, err := c.Refresh(ctx, tenantA, ""); err != nil {
		t.Fatal(err)
	} // forced
	if _, err := c.Refresh(ctx, tenantA, ""); err != nil {
		t.Fatal(err)
	} // limited
	mustGet(t, c, Key{"genesys", "b"}) // miss, evicts the least recently used token (whatsapp/a)
	src.setErr(errNotFound)
	if _, err := c.Get(ctx, Key{"genesys", "gone"}); err == nil {
		t.Fatal("want an error")
	} // miss, a negative entry: its own bound, evicts no token
	if _, err := c.Get(ctx, Key{"genesys", "gone"}); err == nil {
		t.Fatal("want an error")
	} // negative hit
	// ttlcache tells of evictions from a goroutine of its own.
	waitFor(t, "the eviction", func() bool { return collect(t, reader)["token_sidecar.cache.evictions{provider=whatsapp}"] == 1 })

	got := collect(t, reader)
	want := map[string]float64{
		"token_sidecar.cache.hits{provider=genesys}":                     2,
		"token_sidecar.cache.stale_hits{provider=genesys}":               1,
		"token_sidecar.cache.misses{provider=genesys}":                   3,
		"token_sidecar.cache.misses{provider=whatsapp}":                  1,
		"token_sidecar.cache.refreshes{provider=genesys,trigger=ahead}":  1,
		"token_sidecar.cache.refreshes{provider=genesys,trigger=forced}": 1,
		"token_sidecar.cache.refresh_limited{provider=genesys}":          1,
		"token_sidecar.cache.negative_hits{provider=genesys}":            1,
		"token_sidecar.cache.evictions{provider=whatsapp}":               1,
		"token_sidecar.cache.entries{}":                                  3,
		"token_sidecar.token.remaining_lifetime{provider=genesys}":       2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected metric %s = %v", k, got[k])
		}
		if strings.Contains(k, "tenant=") {
			t.Errorf("%s has a tenant label without MetricsTenantLabel", k)
		}
	}
}

func TestMetricsTenantLabel(t *testing.T) {
	c, _, _, reader, _ := newInstrumentedCache(t, time.Hour, func(cfg *Config) { cfg.MetricsTenantLabel = true })
	mustGet(t, c, tenantA)
	mustGet(t, c, tenantA)
	got := collect(t, reader)
	for k, v := range map[string]float64{
		"token_sidecar.cache.hits{provider=genesys,tenant=a}":      1,
		"token_sidecar.cache.misses{provider=genesys,tenant=a}":    1,
		"token_sidecar.token.remaining_lifetime{provider=genesys}": 1, // never per tenant
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

func TestCollapsedCallersLinkToTheSharedFetch(t *testing.T) {
	c, src, _, reader, spans := newInstrumentedCache(t, time.Hour, nil)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	tracer := tp.Tracer("test")
	src.gate = make(chan struct{})
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			ctx, span := tracer.Start(context.Background(), "request")
			defer span.End()
			if i == 1 {
				// Join the flight the first caller started.
				waitFor(t, "the first fetch", func() bool { return src.calls.Load() == 1 })
			}
			if _, err := c.Get(ctx, tenantA); err != nil {
				t.Error(err)
			}
		})
	}
	waitFor(t, "the first fetch", func() bool { return src.calls.Load() == 1 })
	time.Sleep(50 * time.Millisecond)
	close(src.gate)
	wg.Wait()

	var fetch sdktrace.ReadOnlySpan
	var requests []sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		switch s.Name() {
		case "cache.fetch":
			fetch = s
		case "request":
			requests = append(requests, s)
		}
	}
	if fetch == nil || len(requests) != 2 {
		t.Fatalf("spans: fetch %v, %d requests", fetch != nil, len(requests))
	}
	var leader, waiter sdktrace.ReadOnlySpan
	for _, r := range requests {
		if r.SpanContext().SpanID() == fetch.Parent().SpanID() {
			leader = r
		} else {
			waiter = r
		}
	}
	if leader == nil || waiter == nil {
		t.Fatal("cache.fetch is not the child of one of the requests")
	}
	if len(waiter.Links()) != 1 || waiter.Links()[0].SpanContext.SpanID() != fetch.SpanContext().SpanID() {
		t.Errorf("waiter links = %v, want one link to cache.fetch", waiter.Links())
	}
	if len(waiter.Events()) != 1 || waiter.Events()[0].Name != "cache.collapsed" {
		t.Errorf("waiter events = %v, want cache.collapsed", waiter.Events())
	}
	if attrValue(leader.Attributes(), "token_sidecar.cache.result") != "miss" {
		t.Errorf("leader attributes %v lack cache.result=miss", leader.Attributes())
	}
	if attrValue(fetch.Attributes(), "token_sidecar.cache.trigger") != "miss" || attrValue(fetch.Attributes(), "token_sidecar.tenant") != "a" {
		t.Errorf("cache.fetch attributes = %v", fetch.Attributes())
	}
	if got := collect(t, reader)["token_sidecar.cache.collapsed{provider=genesys}"]; got != 1 {
		t.Errorf("collapsed = %v, want 1", got)
	}
}

func TestRefreshAheadIsANewTraceLinkedToTheRequest(t *testing.T) {
	c, src, clk, _, spans := newInstrumentedCache(t, 100*time.Second, nil)
	tracer := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)).Tracer("test")
	mustGet(t, c, tenantA)
	clk.Advance(85 * time.Second)
	ctx, span := tracer.Start(context.Background(), "request")
	if _, err := c.Get(ctx, tenantA); err != nil {
		t.Fatal(err)
	}
	span.End()
	waitFor(t, "the refresh span", func() bool {
		n := 0
		for _, s := range spans.Ended() {
			if s.Name() == "cache.fetch" {
				n++
			}
		}
		return n == 2 && src.calls.Load() == 2
	})
	var refresh sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		if s.Name() == "cache.fetch" && attrValue(s.Attributes(), "token_sidecar.cache.trigger") == "ahead" {
			refresh = s
		}
	}
	if refresh == nil {
		t.Fatal("no cache.fetch span with trigger=ahead")
	}
	if refresh.Parent().IsValid() {
		t.Error("the refresh-ahead span has a parent; want a new trace")
	}
	if l := refresh.Links(); len(l) != 1 || l[0].SpanContext.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("refresh links = %v, want the triggering request", l)
	}
}

func TestFailedFetchSpanHasErrorStatus(t *testing.T) {
	c, src, _, _, spans := newInstrumentedCache(t, time.Hour, nil)
	src.setErr(errNotFound)
	if _, err := c.Get(context.Background(), tenantA); err == nil {
		t.Fatal("want an error")
	}
	ended := spans.Ended()
	if len(ended) != 1 || ended[0].Status().Code.String() != "Error" {
		t.Fatalf("spans %v; want one cache.fetch with status Error", ended)
	}
}

func attrValue(attrs []attribute.KeyValue, key string) string {
	for _, a := range attrs {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}

// BenchmarkGetHit measures a cache hit with and without metrics; with
// metrics on and no tenant label, recording must not allocate.
func BenchmarkGetHit(b *testing.B) {
	for _, bc := range []struct {
		name string
		mp   func() *sdkmetric.MeterProvider
	}{
		{"no-metrics", func() *sdkmetric.MeterProvider { return nil }},
		{"metrics", func() *sdkmetric.MeterProvider {
			return sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			clk := newClock()
			cfg := Config{Source: &source{clock: clk, lifetime: time.Hour}, Now: clk.Now}
			if mp := bc.mp(); mp != nil {
				cfg.MeterProvider = mp
			}
			c, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := trace.ContextWithSpanContext(context.Background(), trace.SpanContext{})
			if _, err := c.Get(ctx, tenantA); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Get(ctx, tenantA); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
