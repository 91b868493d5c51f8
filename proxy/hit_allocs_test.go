package proxy

import (
	"context"
	"net/http"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// discardWriter is a ResponseWriter whose header map is reused between
// requests, so that only the handler's own allocations are counted.
type discardWriter struct {
	header http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// TestCachedHitDoesNotAllocate: a cached GET /token, wired as cmd wires the
// token listener (metrics, spans on demand, the X-Token-Request check),
// allocates nothing in the handler: no middleware closure per request, no
// parsed query, no body buffer, no metric options.
func TestCachedHitDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector drops pooled buffers and contexts")
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	t.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	})
	h, err := NewTokenHandler(Config{Cache: &hitCache{tok: testToken()}, RequireRequestHeader: true,
		MeterProvider: mp, TracerProvider: tp, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	r := tokenRequest(http.MethodGet, "/token?tenant=acme&provider=genesys")
	r.Header.Set("User-Agent", "curl/8.5.0")
	r.Header.Set("Accept", "*/*")
	w := &discardWriter{header: http.Header{}}
	serveOnce := func() {
		clear(w.header)
		w.status = 0
		h.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			t.Fatalf("status %d", w.status)
		}
	}
	serveOnce() // the first answer prepares its metric options
	if n := testing.AllocsPerRun(200, serveOnce); n != 0 {
		t.Errorf("a cached hit allocates %v times, want 0", n)
	}
}
