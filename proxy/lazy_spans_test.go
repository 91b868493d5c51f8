package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/token-sidecar/token-sidecar/cache"
)

const (
	callerTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpanID  = "00f067aa0ba902b7"
	callerParent  = "00-" + callerTraceID + "-" + callerSpanID + "-01"
)

// ctxLog is a slog.Handler that keeps the span context of every record's
// context, with its message.
type ctxLog struct {
	level   slog.Level // the lowest level logged; zero means info
	mu      sync.Mutex
	records []loggedSpan
}

type loggedSpan struct {
	msg string
	sc  trace.SpanContext
}

func (h *ctxLog) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *ctxLog) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, loggedSpan{r.Message, trace.SpanContextFromContext(ctx)})
	return nil
}
func (h *ctxLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *ctxLog) WithGroup(string) slog.Handler      { return h }

func (h *ctxLog) all() []loggedSpan {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]loggedSpan(nil), h.records...)
}

// hotCache holds the token of tenant "hot" (the Cached fast path) and
// leaves every other tenant to its fakeCache.
type hotCache struct{ *fakeCache }

func (c hotCache) Cached(_ context.Context, key cache.Key) (cache.Token, bool) {
	switch key.Tenant {
	case "hot":
		return testToken(), true
	case "slow-hot":
		time.Sleep(20 * time.Millisecond)
		return testToken(), true
	case "boom-hot":
		panic("boom") // before anything has started a span
	}
	return cache.Token{}, false
}

// TestLazySpans: without otelhttp, a request gets its span when it first
// needs a trace — going upstream, or being logged — continuing the caller's
// traceparent, and a cached token answered without a log line gets none.
func TestLazySpans(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	logs := &ctxLog{}
	var upstream trace.SpanContext
	fc := &fakeCache{get: func(ctx context.Context, key cache.Key) (cache.Token, error) {
		upstream = trace.SpanContextFromContext(ctx)
		if key.Tenant == "gone" {
			return cache.Token{}, &codedError{code: "CREDENTIALS_NOT_FOUND"}
		}
		return testToken(), nil
	}}
	h, err := NewTokenHandler(Config{Cache: hotCache{fc}, RequireRequestHeader: true, Now: func() time.Time { return testNow },
		Logger: slog.New(logs), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	send := func(target string) int {
		r := tokenRequest(http.MethodGet, target)
		r.Header.Set("traceparent", callerParent)
		return serve(h, r).Code
	}
	// checkSpan checks the one new span since n spans had ended and
	// returns its context.
	checkSpan := func(step string, n int) trace.SpanContext {
		t.Helper()
		ended := spans.Ended()
		if len(ended) != n+1 {
			t.Fatalf("%s: %d spans ended, want %d", step, len(ended), n+1)
		}
		s := ended[n]
		if s.Name() != "GET /token" || s.SpanKind() != trace.SpanKindServer ||
			s.SpanContext().TraceID().String() != callerTraceID || s.Parent().SpanID().String() != callerSpanID {
			t.Errorf("%s: span %q kind %v trace %s parent %s; want a server span GET /token, child of the caller's %s",
				step, s.Name(), s.SpanKind(), s.SpanContext().TraceID(), s.Parent().SpanID(), callerParent)
		}
		return s.SpanContext()
	}

	// A cached token, not logged at info: no span at all.
	if code := send("/token?tenant=hot"); code != http.StatusOK {
		t.Fatalf("hit: status %d", code)
	}
	if n := len(spans.Ended()); n != 0 || len(logs.all()) != 0 || fc.calls() != 0 {
		t.Fatalf("hit: %d spans, %d log lines, %d cache calls; want none", n, len(logs.all()), fc.calls())
	}

	// A miss: the span exists when the cache goes upstream.
	if code := send("/token?tenant=cold"); code != http.StatusOK {
		t.Fatalf("miss: status %d", code)
	}
	sc := checkSpan("miss", 0)
	if !upstream.Equal(sc) {
		t.Errorf("miss: the cache saw span context %v, want the request's %v", upstream, sc)
	}

	// A miss that fails: one span, seen by the cache and by the log line.
	if code := send("/token?tenant=gone"); code != http.StatusNotFound {
		t.Fatalf("404 miss: status %d", code)
	}
	sc = checkSpan("404 miss", 1)
	if l := logs.all(); len(l) != 1 || !l[0].sc.Equal(sc) || !upstream.Equal(sc) {
		t.Errorf("404 miss: log lines %+v, cache saw %v; want one line and the cache in span %v", l, upstream, sc)
	}

	// Refused before the cache (a malformed tenant): the span is started
	// for the log line.
	if code := send("/token?tenant=a%2Fb"); code != http.StatusBadRequest {
		t.Fatalf("400: status %d", code)
	}
	sc = checkSpan("400", 2)
	if l := logs.all(); len(l) != 2 || !l[1].sc.Equal(sc) {
		t.Errorf("400: log lines %+v; want a second line in span %v", l, sc)
	}
	if fc.calls() != 2 {
		t.Errorf("%d cache calls, want 2 (the two misses)", fc.calls())
	}
}

// TestLazySpansKeepARequestsOwnSpan: under otelhttp (cmd's wrapping while
// spans are recorded) the request's span is used, and no second one is
// started.
func TestLazySpansKeepARequestsOwnSpan(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	logs := &ctxLog{}
	var upstream trace.SpanContext
	fc := &fakeCache{get: func(ctx context.Context, _ cache.Key) (cache.Token, error) {
		upstream = trace.SpanContextFromContext(ctx)
		return cache.Token{}, &codedError{code: "CREDENTIALS_NOT_FOUND"}
	}}
	h := otelhttp.NewHandler(newTestHandler(t, fc, func(c *Config) {
		c.Logger = slog.New(logs)
		c.TracerProvider = tp
	}), "token", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(propagation.TraceContext{}))
	r := tokenRequest(http.MethodGet, "/token?tenant=gone")
	r.Header.Set("traceparent", callerParent)
	if code := serve(h, r).Code; code != http.StatusNotFound {
		t.Fatalf("status %d", code)
	}
	ended := spans.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended, want otelhttp's only", len(ended))
	}
	sc := ended[0].SpanContext()
	if l := logs.all(); len(l) != 1 || !l[0].sc.Equal(sc) || !upstream.Equal(sc) {
		t.Errorf("log lines %+v, cache saw %v; want both in otelhttp's span %v", l, upstream, sc)
	}
}

// TestLazySpansReachTheAPI: a /proxy/ request's call to the API carries
// the caller's trace.
func TestLazySpansReachTheAPI(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	api := newFakeAPI(t, nil)
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) {
		return apiToken(testAccessToken, api.srv.URL+"/"), nil
	}}
	url := startProxy(t, fc, func(c *Config) {
		c.TracerProvider = tp
		c.APITransport = otelhttp.NewTransport(NewAPITransport(),
			otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(propagation.TraceContext{}))
	})
	resp, _ := proxyDo(t, http.MethodGet, url+"/proxy/api/v2/users/me", nil, http.Header{"Traceparent": {callerParent}, "X-Tenant-Id": {"acme"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	reqs := api.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d API requests, want 1", len(reqs))
	}
	sc, err := trace.TraceIDFromHex(callerTraceID)
	if err != nil {
		t.Fatal(err)
	}
	got := propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(reqs[0].header))
	if id := trace.SpanContextFromContext(got).TraceID(); id != sc {
		t.Errorf("the API got traceparent %q (trace %s); want the caller's trace %s", reqs[0].header.Get("Traceparent"), id, sc)
	}
}

// TestLazySpansEndAndCoverTheRequest: a span started for a log line is dated
// from the request's arrival; a panic's log lines share the request's span,
// and the span ends even when the panic is net/http's ErrAbortHandler,
// which passes through the middleware.
func TestLazySpansEndAndCoverTheRequest(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	logs := &ctxLog{level: slog.LevelDebug}
	fc := &fakeCache{get: func(_ context.Context, key cache.Key) (cache.Token, error) {
		if key.Tenant == "abort" {
			panic(http.ErrAbortHandler)
		}
		return testToken(), nil
	}}
	h, err := NewTokenHandler(Config{Cache: hotCache{fc}, RequireRequestHeader: true, Now: func() time.Time { return testNow },
		Logger: slog.New(logs), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}

	// Logged at debug only: the span starts when the line is written, dated
	// from the request's arrival.
	if code := serve(h, tokenRequest(http.MethodGet, "/token?tenant=slow-hot")).Code; code != http.StatusOK {
		t.Fatalf("slow hit: status %d", code)
	}
	ended := spans.Ended()
	if len(ended) != 1 || ended[0].EndTime().Sub(ended[0].StartTime()) < 20*time.Millisecond {
		t.Fatalf("slow hit: %d spans; want one covering the 20 ms the request took", len(ended))
	}

	// A panic: its error line and the request line are in one span.
	if code := serve(h, tokenRequest(http.MethodGet, "/token?tenant=boom-hot")).Code; code != http.StatusInternalServerError {
		t.Fatalf("panic: status %d", code)
	}
	ended = spans.Ended()
	l := logs.all()
	if len(ended) != 2 || len(l) != 3 || l[1].msg != "panic while serving a request" ||
		!l[1].sc.Equal(ended[1].SpanContext()) || !l[2].sc.Equal(ended[1].SpanContext()) {
		t.Fatalf("panic: %d spans, log lines %+v; want a second span holding both lines", len(ended), l)
	}

	// ErrAbortHandler is re-panicked through the middleware; net/http
	// swallows it. The span still ends.
	srv := httptest.NewServer(h)
	defer srv.Close()
	r, _ := http.NewRequest(http.MethodGet, srv.URL+"/token?tenant=abort", nil)
	r.Header.Set("X-Token-Request", "true")
	if resp, err := srv.Client().Do(r); err == nil {
		resp.Body.Close()
		t.Fatalf("abort: status %d, want the connection cut", resp.StatusCode)
	}
	if n := len(spans.Ended()); n != 3 {
		t.Errorf("abort: %d spans ended, want 3 (the aborted request's too)", n)
	}
}
