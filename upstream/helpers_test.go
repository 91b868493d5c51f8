package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// loopbackTransport is the transport every test uses: no proxy, and a
// dialer that refuses anything but loopback, so no test can reach the
// network even by mistake.
func loopbackTransport(t *testing.T) *http.Transport {
	d := &net.Dialer{Timeout: time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return nil, fmt.Errorf("test dialer: %s is not loopback", addr)
			}
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 4,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func testHTTPClient(t *testing.T) *http.Client {
	return &http.Client{Transport: loopbackTransport(t)}
}

// bodyCounter wraps a transport and counts response bodies handed out and
// closed, to prove that no retried (or final) body is left open.
type bodyCounter struct {
	base           http.RoundTripper
	opened, closed atomic.Int64
}

func (b *bodyCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := b.base.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	b.opened.Add(1)
	resp.Body = &countedBody{ReadCloser: resp.Body, closed: &b.closed}
	return resp, nil
}

type countedBody struct {
	io.ReadCloser
	once   sync.Once
	closed *atomic.Int64
}

func (c *countedBody) Close() error {
	c.once.Do(func() { c.closed.Add(1) })
	return c.ReadCloser.Close()
}

// logCapture collects JSON log lines at debug level.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fast settings: small backoffs so that retry tests take milliseconds.
const (
	fastMin     = 2 * time.Millisecond
	fastMax     = 10 * time.Millisecond
	testTimeout = 150 * time.Millisecond // per attempt, for timeout tests
)

func newFakeTenantService(t *testing.T) *upstreamtest.TenantService {
	ts := upstreamtest.NewTenantService()
	t.Cleanup(ts.Close)
	return ts
}

func newFakeLogin(t *testing.T) *upstreamtest.Login {
	l := upstreamtest.NewLogin()
	t.Cleanup(l.Close)
	return l
}

func newTenantClient(t *testing.T, base string, mod ...func(*TenantClientConfig)) *TenantClient {
	t.Helper()
	cfg := TenantClientConfig{BaseURL: base, CallConfig: CallConfig{
		Timeout:    2 * time.Second,
		BackoffMin: fastMin, BackoffMax: fastMax,
		HTTPClient: testHTTPClient(t),
	}}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := NewTenantClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newLoginClient(t *testing.T, base string, mod ...func(*LoginClientConfig)) *LoginClient {
	t.Helper()
	cfg := LoginClientConfig{
		BaseURL:             base,
		RateLimitBackoffMin: fastMin, RateLimitBackoffMax: fastMax,
		CallConfig: CallConfig{
			Timeout:    2 * time.Second,
			BackoffMin: fastMin, BackoffMax: fastMax,
			HTTPClient: testHTTPClient(t),
		},
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := NewLoginClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// asError asserts err is an *Error with code and returns it.
func asError(t *testing.T, err error, code Code) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *upstream.Error", err, err)
	}
	if e.Code != code {
		t.Fatalf("code = %s, want %s (error: %v)", e.Code, code, err)
	}
	return e
}

// jsonBody is a tiny helper for scripted bodies.
func jsonBody(s string) []byte { return []byte(s) }

// assertNoSecrets fails if any secret appears in text.
func assertNoSecrets(t *testing.T, where, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains a secret (%.6s…): %s", where, s, text)
		}
	}
}
