package proxy

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// instrumentationName names the meter of this package.
const instrumentationName = "github.com/token-sidecar/token-sidecar/proxy"

// observe is the telemetry middleware of both listeners. It sits right
// inside requestLog, so that it sees a handler's error before requestLog
// writes the answer. It
//
//   - names the request after its echo route, for the otelhttp handler that
//     cmd wraps around each listener: it sets http.Request.Pattern, which
//     otelhttp reads after the handler returns to name the server span
//     ("GET /token") and to label http.server.request.duration with
//     http.route, and, when the span records, sets the span's http.route
//     attribute at once;
//   - counts the answer in m, unless m is nil.
//
// Pattern rather than otelhttp's Labeler: the request is the one otelhttp
// handed to echo (requestLog does not replace it), and setting a field
// allocates nothing, where a Labeler grows a slice under a mutex on every
// request. Unknown paths have no route and keep the plain span name ("GET").
//
// One middleware rather than two: echo builds the middleware chain on every
// request, one allocation per middleware.
func observe(m *requestMetrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if route := c.Path(); route != "" {
				req := c.Request()
				req.Pattern = route
				if span := trace.SpanFromContext(req.Context()); span.IsRecording() {
					span.SetAttributes(semconv.HTTPRoute(route))
					span.SetName(req.Method + " " + route)
				}
			}
			err := next(c)
			if m != nil {
				m.count(c, err)
			}
			return err
		}
	}
}

// requestMetrics counts the token listener's answers as
// token_sidecar.token.requests{http.route, http.response.status_code,
// error.type}. It is safe for concurrent use.
type requestMetrics struct {
	requests    metric.Int64Counter
	tenantLabel bool

	// opts is a copy-on-write map from an answer's labels to its prepared
	// option slice: a repeated answer (every cached token) is counted
	// without allocating. The key space is small and bounded: routes ×
	// statuses × codes.
	opts atomic.Pointer[map[answerLabels][]metric.AddOption]
	mu   sync.Mutex
}

type answerLabels struct {
	route  string
	status int
	code   string
}

// newRequestMetrics returns nil when mp is nil: no metrics.
func newRequestMetrics(mp metric.MeterProvider, tenantLabel bool) (*requestMetrics, error) {
	if mp == nil {
		return nil, nil
	}
	c, err := mp.Meter(instrumentationName).Int64Counter("token_sidecar.token.requests",
		metric.WithUnit("{request}"),
		metric.WithDescription("Answers of the token listener by route, HTTP status and error code (error.type, absent on success)."))
	if err != nil {
		return nil, err
	}
	m := &requestMetrics{requests: c, tenantLabel: tenantLabel}
	empty := map[answerLabels][]metric.AddOption{}
	m.opts.Store(&empty)
	return m, nil
}

// count counts one answer: err is the handler's error, not yet written,
// which it classifies the way the error handler will.
func (m *requestMetrics) count(c echo.Context, err error) {
	l := answerLabels{route: c.Path(), status: c.Response().Status}
	tenant := ""
	if err != nil {
		p := classify(err)
		l.code, tenant = p.code, p.tenant
		if !c.Response().Committed {
			l.status = p.status
		}
	} else if m.tenantLabel {
		tenant, _ = c.Get(logTenantKey).(string)
	}
	m.add(l, tenant)
}

func (m *requestMetrics) add(l answerLabels, tenant string) {
	ctx := context.Background()
	if m.tenantLabel {
		attrs := append(l.attributes(), attribute.String("tenant", tenant))
		m.requests.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(attrs...)))
		return
	}
	if o, ok := (*m.opts.Load())[l]; ok {
		m.requests.Add(ctx, 1, o...)
		return
	}
	m.mu.Lock()
	old := *m.opts.Load()
	o, ok := old[l]
	if !ok {
		o = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(l.attributes()...))}
		next := make(map[answerLabels][]metric.AddOption, len(old)+1)
		for k, v := range old {
			next[k] = v
		}
		next[l] = o
		m.opts.Store(&next)
	}
	m.mu.Unlock()
	m.requests.Add(ctx, 1, o...)
}

func (l answerLabels) attributes() []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 4)
	if l.route != "" {
		attrs = append(attrs, semconv.HTTPRoute(l.route))
	}
	attrs = append(attrs, semconv.HTTPResponseStatusCode(l.status))
	if l.code != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(l.code))
	}
	return attrs
}
