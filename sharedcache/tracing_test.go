package sharedcache

import (
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
)

func TestSpansNameCommandsButNeverTheirArguments(t *testing.T) {
	srv := redistest.Start(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	keys := writeKeyFile(t, newKey(t))
	a := newPod(t, srv.URL(), keys, func(c *Config) { c.TracerProvider = tp })
	b := newPod(t, srv.URL(), keys, func(c *Config) { c.TracerProvider = tp })
	tok := mustFetch(t, a, miss(key1))
	mustFetch(t, b, miss(key1))
	mustFetch(t, b, cache.FetchRequest{Key: key1, Reason: cache.ReasonForced, Current: tok, Refused: tok.AccessToken})

	commands := map[string]bool{}
	results := map[string]bool{}
	for _, s := range rec.Ended() {
		if strings.HasPrefix(s.Name(), "redis ") {
			commands[s.Name()] = true
		}
		for _, kv := range s.Attributes() {
			v := kv.Value.String()
			if kv.Key == "token_sidecar.shared_cache.result" {
				results[v] = true
			}
			for _, secret := range []string{DefaultPrefix, key1.Tenant, "access-"} {
				if strings.Contains(v, secret) {
					t.Errorf("span %s attribute %s = %q holds %q", s.Name(), kv.Key, v, secret)
				}
			}
		}
	}
	for _, want := range []string{"redis MGET", "redis SET NX", "redis SET", "redis EVALSHA release"} {
		if !commands[want] {
			t.Errorf("no span %q; spans: %v", want, commands)
		}
	}
	if !results["fetched"] || !results["adopted"] {
		t.Errorf("fetch results %v, want fetched and adopted", results)
	}
}
