package upstream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/token-sidecar/token-sidecar/regions"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// failsafe-go's breaker reads the wall clock and takes no other, so the
// half-open tests use short open durations rather than an injected clock.
const shortOpen = 150 * time.Millisecond

func s503() upstreamtest.Step { return upstreamtest.Step{Status: http.StatusServiceUnavailable} }

func repeat(st upstreamtest.Step, n int) []upstreamtest.Step {
	out := make([]upstreamtest.Step, n)
	for i := range out {
		out[i] = st
	}
	return out
}

func region(t *testing.T, name string) regions.Region {
	t.Helper()
	r, err := regions.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// routedClient sends every request for a host of routes to that base URL
// instead, so that the real region login hosts (login.mypurecloud.ie …) can
// be fakes on loopback. The request URL the client built, and so the
// breaker's key, is untouched.
func routedClient(t *testing.T, routes map[string]string) *http.Client {
	base := loopbackTransport(t)
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		target, ok := routes[r.URL.Host]
		if !ok {
			return nil, fmt.Errorf("test: no route for %s", r.URL.Host)
		}
		u, err := url.Parse(target)
		if err != nil {
			return nil, err
		}
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, u.Host
		return base.RoundTrip(r)
	})}
}

// tenantCreds are loginCreds for another tenant: the same client, so that
// one script of the fake login answers them all. A breaker opens only on
// failures of FailureThreshold distinct tenants.
func tenantCreds(tenant string) *Credentials {
	c := loginCreds()
	c.Tenant = tenant
	return c
}

// loginBreaker returns the breaker of host in c; nil if c has none.
func loginBreaker(c *LoginClient, host string) *hostBreaker {
	return c.call.breakers.forHost(host)
}

func TestBreakerOpensOnLoginFailuresAndAnswersAtOnce(t *testing.T) {
	t.Parallel()
	logs := &logCapture{}
	l, c := newLoginFixture(t, func(cfg *LoginClientConfig) {
		cfg.Logger = logs.logger()
		// Slow backoff: a retry of the open breaker would show as a wait.
		cfg.BackoffMin, cfg.BackoffMax = time.Second, time.Second
		cfg.Breaker = BreakerConfig{FailureThreshold: 2, FailureRate: 1, OpenDuration: 10 * time.Second}
	})
	l.Script(loginID, repeat(s503(), 10)...)

	// One tenant's failures, retries included, do not open it.
	_, err := c.Exchange(context.Background(), euWest1(t), tenantCreds("first"))
	if e := asError(t, err, CodeOAuthExchangeFailed); e.Attempts != 3 || errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("first tenant: %v after %d attempts; want its 3 attempts", err, e.Attempts)
	}

	// The second tenant's first 503 opens the breaker: the call ends there
	// instead of waiting out a backoff for a retry that would be refused.
	start := time.Now()
	_, err = c.Exchange(context.Background(), euWest1(t), tenantCreds("second"))
	e := asError(t, err, CodeOAuthExchangeFailed)
	if e.Attempts != 1 || l.TotalCalls() != 4 || e.Status != http.StatusServiceUnavailable {
		t.Fatalf("attempts %d, login calls %d, status %d; want 1, 4, 503", e.Attempts, l.TotalCalls(), e.Status)
	}
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("the call that opened the breaker took %v: it waited for a retry", took)
	}
	if e.RetryAfterHint != 10*time.Second {
		t.Errorf("RetryAfterHint %v, want the 10 s the breaker stays open", e.RetryAfterHint)
	}

	// Open: refused without an HTTP attempt and without a retry.
	start = time.Now()
	_, err = c.Exchange(context.Background(), euWest1(t), loginCreds())
	took := time.Since(start)
	e = asError(t, err, CodeOAuthExchangeFailed)
	if !errors.Is(err, ErrCircuitOpen) {
		t.Errorf("errors.Is(%v, ErrCircuitOpen) is false", err)
	}
	if l.TotalCalls() != 4 || e.Attempts != 0 || e.Status != 0 || e.Upstream != GenesysLogin {
		t.Errorf("login calls %d, error %+v; want no attempt", l.TotalCalls(), e)
	}
	if took > 500*time.Millisecond {
		t.Errorf("refusal took %v: the open breaker was retried", took)
	}
	if e.RetryAfterHint < 9*time.Second || e.RetryAfterHint > 10*time.Second || e.RetryAfterHint%time.Second != 0 {
		t.Errorf("RetryAfterHint %v, want the time left open in whole seconds", e.RetryAfterHint)
	}
	if !strings.Contains(err.Error(), "circuit breaker open for "+hostKey(mustURL(t, l.URL()))) {
		t.Errorf("error text %q does not name the host", err)
	}
	out := logs.String()
	if n := strings.Count(out, "upstream attempt failed, retrying"); n != 2 {
		t.Errorf("%d retries logged, want 2 (the first tenant's):\n%s", n, out)
	}
	if !strings.Contains(out, `"level":"WARN","msg":"circuit breaker opened`) || !strings.Contains(out, `"tenants":2,`) ||
		!strings.Contains(out, `"upstream":"genesys_login","host":"`+hostKey(mustURL(t, l.URL()))+`"`) {
		t.Errorf("no warning with upstream and host for the opening:\n%s", out)
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestBreakerOpensOnTenantServiceFailures(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	ts.SetCredentials("acme", acmeCreds)
	c := newTenantClient(t, ts.URL(), func(cfg *TenantClientConfig) {
		cfg.Timeout = testTimeout
		cfg.MaxRetries = -1
		cfg.Breaker = BreakerConfig{FailureThreshold: 3, FailureRate: 1, OpenDuration: 10 * time.Second}
	})
	// Timeouts, a dropped connection and a 5xx all count, each from
	// another tenant.
	tenants := []string{"t-timeout", "t-drop", "t-502"}
	ts.Script(tenants[0], "genesys", upstreamtest.Step{Delay: 4 * testTimeout})
	ts.Script(tenants[1], "genesys", upstreamtest.Step{Drop: true})
	ts.Script(tenants[2], "genesys", upstreamtest.Step{Status: 502})
	for i, tenant := range tenants {
		_, err := c.GenesysCredentials(context.Background(), tenant)
		if e := asError(t, err, CodeTenantServiceUnavailable); errors.Is(err, ErrCircuitOpen) || e.Attempts != 1 {
			t.Fatalf("call %d: %v; want a failed attempt", i, err)
		}
	}
	_, err := c.StaticToken(context.Background(), "acme", ProviderWhatsApp)
	e := asError(t, err, CodeTenantServiceUnavailable)
	if !errors.Is(err, ErrCircuitOpen) || e.Attempts != 0 || e.RetryAfterHint < time.Second {
		t.Errorf("error %+v; want a refusal with a hint", e)
	}
	if n := ts.TotalCalls(); n != 3 {
		t.Errorf("Tenant Service calls = %d, want 3", n)
	}
}

// TestBreakerIgnoresClientErrors: a tenant's 4xx, 429 and the rate-limit
// 400 are answers of a healthy host. The breakers open at one failure when
// every attempt in the window failed, so any of these counted as a failure
// on a client's first attempt would open them; and each breaker's counts
// show that none of them counted as a failure while host faults do.
func TestBreakerIgnoresClientErrors(t *testing.T) {
	t.Parallel()
	hair := BreakerConfig{FailureThreshold: 1, FailureRate: 1, OpenDuration: 10 * time.Second}
	counts := func(h *hostBreaker) (attempts, failures uint) {
		return h.cb.Metrics().Executions(), h.cb.Metrics().Failures()
	}

	l, c := newLoginFixture(t, func(cfg *LoginClientConfig) { cfg.Breaker = hair })
	cb := loginBreaker(c, hostKey(mustURL(t, l.URL())))
	unknown := &Credentials{Tenant: "ghost", ClientID: "nobody", ClientSecret: []byte("x"), Region: "eu-west-1"}
	for range 3 {
		_, err := c.Exchange(context.Background(), euWest1(t), unknown) // 400 invalid_client
		asError(t, err, CodeOAuthInvalidGrant)
		if errors.Is(err, ErrCircuitOpen) || cb.IsOpen() {
			t.Fatalf("a 400 invalid_client opened the breaker: %v", err)
		}
	}
	l.Script(loginID, upstreamtest.Step{Status: 401}, upstreamtest.Step{Status: 403},
		upstreamtest.Step{Status: 429}, upstreamtest.Step{Status: 429}, upstreamtest.Step{Status: 429},
		upstreamtest.RateLimitStep(), upstreamtest.RateLimitStep(), upstreamtest.RateLimitStep())
	for range 4 {
		_, err := c.Exchange(context.Background(), euWest1(t), loginCreds())
		if errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("a 4xx opened the breaker: %v", err)
		}
	}
	if n := l.TotalCalls(); n != 11 {
		t.Errorf("login calls = %d, want 11 (3 unknown, 401, 403, 3×429, 3×rate limit)", n)
	}
	if a, f := counts(cb); a != 11 || f != 0 {
		t.Errorf("login breaker counted %d attempts, %d failures; want 11, 0", a, f)
	}
	// The breaker is on: 503s count against it.
	l.Script(loginID, s503(), s503(), s503())
	c.Exchange(context.Background(), euWest1(t), loginCreds())
	if a, f := counts(cb); a != 14 || f != 3 {
		t.Errorf("after three 503s the login breaker counted %d attempts, %d failures; want 14, 3", a, f)
	}

	ts := newFakeTenantService(t)
	tc := newTenantClient(t, ts.URL(), func(cfg *TenantClientConfig) { cfg.Breaker = hair })
	tcb := tenantBreaker(t, tc, ts.URL())
	ts.Script("acme", "genesys", upstreamtest.Step{Status: 400}, upstreamtest.Step{Status: 403})
	for _, want := range []Code{CodeInvalidRequest, CodeTenantServiceUnavailable, CodeCredentialsNotFound, CodeCredentialsNotFound} {
		_, err := tc.GenesysCredentials(context.Background(), "acme")
		asError(t, err, want)
		if errors.Is(err, ErrCircuitOpen) || tcb.IsOpen() {
			t.Fatalf("a 4xx opened the breaker: %v", err)
		}
	}
	if n := ts.TotalCalls(); n != 4 {
		t.Errorf("Tenant Service calls = %d, want 4", n)
	}
	if a, f := counts(tcb); a != 4 || f != 0 {
		t.Errorf("Tenant Service breaker counted %d attempts, %d failures; want 4, 0", a, f)
	}
	// The breaker is on: a 502 on a fresh window opens it.
	ts.Script("acme", "genesys", upstreamtest.Step{Status: 502})
	fresh := newTenantClient(t, ts.URL(), func(cfg *TenantClientConfig) { cfg.Breaker = hair; cfg.MaxRetries = -1 })
	fresh.GenesysCredentials(context.Background(), "acme")
	if _, err := fresh.GenesysCredentials(context.Background(), "acme"); !errors.Is(err, ErrCircuitOpen) {
		t.Errorf("after a 502: %v; want the breaker open", err)
	}
}

// TestBreakerIsPerLoginHost: each region's login host has its own breaker;
// with a BaseURL override every region goes to one host and shares it.
func TestBreakerIsPerLoginHost(t *testing.T) {
	t.Parallel()
	ie, de := newFakeLogin(t), newFakeLogin(t)
	for _, l := range []*upstreamtest.Login{ie, de} {
		l.AddClient(loginID, loginSecret)
	}
	ie.Script(loginID, repeat(s503(), 20)...)
	bc := BreakerConfig{FailureThreshold: 2, FailureRate: 1, OpenDuration: 10 * time.Second}
	c := newLoginClient(t, "", func(cfg *LoginClientConfig) {
		cfg.HTTPClient = routedClient(t, map[string]string{"login.mypurecloud.ie": ie.URL(), "login.mypurecloud.de": de.URL()})
		cfg.Breaker = bc
	})

	_, err := c.Exchange(context.Background(), euWest1(t), tenantCreds("a"))
	asError(t, err, CodeOAuthExchangeFailed)
	_, err = c.Exchange(context.Background(), euWest1(t), tenantCreds("b"))
	asError(t, err, CodeOAuthExchangeFailed)
	_, err = c.Exchange(context.Background(), euWest1(t), loginCreds())
	if !errors.Is(err, ErrCircuitOpen) || !strings.Contains(err.Error(), "https://login.mypurecloud.ie") {
		t.Fatalf("eu-west-1: %v; want its breaker open", err)
	}
	for range 3 {
		if _, err := c.Exchange(context.Background(), region(t, "eu-central-1"), loginCreds()); err != nil {
			t.Fatalf("eu-central-1 is blocked by eu-west-1's breaker: %v", err)
		}
	}
	if ie.TotalCalls() != 4 || de.TotalCalls() != 3 {
		t.Errorf("calls: ie %d, de %d; want 4 (a's 3, b's first), 3", ie.TotalCalls(), de.TotalCalls())
	}
	if s := loginBreaker(c, "https://login.mypurecloud.de").State(); s != circuitbreaker.ClosedState {
		t.Errorf("de breaker %s, want closed", s)
	}

	// One override host for every region: one breaker.
	shared := newLoginClient(t, ie.URL(), func(cfg *LoginClientConfig) { cfg.Breaker = bc })
	shared.Exchange(context.Background(), euWest1(t), tenantCreds("a"))
	shared.Exchange(context.Background(), region(t, "eu-central-1"), tenantCreds("b"))
	if _, err := shared.Exchange(context.Background(), region(t, "eu-central-1"), loginCreds()); !errors.Is(err, ErrCircuitOpen) {
		t.Errorf("override host: %v; want the shared breaker open", err)
	}
}

func TestBreakerHalfOpensThenReopensOrCloses(t *testing.T) {
	t.Parallel()
	logs := &logCapture{}
	l, c := newLoginFixture(t, func(cfg *LoginClientConfig) {
		cfg.Logger = logs.logger()
		cfg.MaxRetries = -1
		cfg.Breaker = BreakerConfig{FailureThreshold: 2, FailureRate: 1, OpenDuration: shortOpen, HalfOpenProbes: 2}
	})
	cb := loginBreaker(c, hostKey(mustURL(t, l.URL())))
	exchange := func() error {
		_, err := c.Exchange(context.Background(), euWest1(t), loginCreds())
		return err
	}
	l.Script(loginID, s503(), s503())
	c.Exchange(context.Background(), euWest1(t), tenantCreds("a"))
	c.Exchange(context.Background(), euWest1(t), tenantCreds("b"))
	if err := exchange(); !errors.Is(err, ErrCircuitOpen) || l.TotalCalls() != 2 {
		t.Fatalf("%v after %d calls; want the breaker open", err, l.TotalCalls())
	}

	// After the open duration a probe goes through; its failure reopens.
	time.Sleep(shortOpen + 50*time.Millisecond)
	l.Script(loginID, s503())
	if err := exchange(); errors.Is(err, ErrCircuitOpen) || l.TotalCalls() != 3 {
		t.Fatalf("probe: %v after %d calls; want it to reach the host", err, l.TotalCalls())
	}
	if cb.State() != circuitbreaker.OpenState {
		t.Fatalf("after a failed probe the breaker is %s, want open", cb.State())
	}
	if err := exchange(); !errors.Is(err, ErrCircuitOpen) || l.TotalCalls() != 3 {
		t.Fatalf("%v after %d calls; want the breaker open again", err, l.TotalCalls())
	}

	// Half-open again: the two probes are let through, a third caller is
	// refused with a hint of at least a second.
	time.Sleep(shortOpen + 50*time.Millisecond)
	l.Script(loginID, upstreamtest.Step{Delay: 300 * time.Millisecond}, upstreamtest.Step{Delay: 300 * time.Millisecond})
	var wg sync.WaitGroup
	probeErrs := make([]error, 2)
	for i := range probeErrs {
		wg.Go(func() { probeErrs[i] = exchange() })
	}
	for deadline := time.Now().Add(5 * time.Second); l.TotalCalls() < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("probes did not arrive: %d calls", l.TotalCalls())
		}
		time.Sleep(5 * time.Millisecond)
	}
	err := exchange()
	if e := asError(t, err, CodeOAuthExchangeFailed); !errors.Is(err, ErrCircuitOpen) || e.RetryAfterHint != time.Second {
		t.Errorf("third caller while half-open: %v, hint %v; want a refusal with a 1 s hint", err, e.RetryAfterHint)
	}
	wg.Wait()
	for _, err := range probeErrs {
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
	}
	if cb.State() != circuitbreaker.ClosedState {
		t.Fatalf("after two good probes the breaker is %s, want closed", cb.State())
	}
	if err := exchange(); err != nil || l.TotalCalls() != 6 {
		t.Fatalf("closed: %v after %d calls", err, l.TotalCalls())
	}

	out := logs.String()
	for _, want := range []string{
		`"level":"WARN","msg":"circuit breaker opened: calls to the host are refused","upstream":"genesys_login","host":"` + hostKey(mustURL(t, l.URL())) + `","from":"closed"`,
		`"level":"INFO","msg":"circuit breaker half-open: probing the host"`,
		`"level":"WARN","msg":"circuit breaker opened: calls to the host are refused","upstream":"genesys_login","host":"` + hostKey(mustURL(t, l.URL())) + `","from":"half-open"`,
		`"level":"INFO","msg":"circuit breaker closed: the host answers again"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
	assertNoSecrets(t, "logs", out, loginID, loginSecret)
}

// TestBreakerIgnoresCallerCancellation: a caller giving up says nothing
// about the host.
func TestBreakerIgnoresCallerCancellation(t *testing.T) {
	t.Parallel()
	l, c := newLoginFixture(t, func(cfg *LoginClientConfig) {
		cfg.Breaker = BreakerConfig{FailureThreshold: 1, FailureRate: 1, OpenDuration: 10 * time.Second}
	})
	l.Script(loginID, repeat(upstreamtest.Step{Delay: 5 * time.Second}, 3)...)
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := c.Exchange(ctx, euWest1(t), loginCreds())
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%v; want the caller's deadline", err)
		}
	}
	if _, err := c.Exchange(context.Background(), euWest1(t), loginCreds()); err != nil {
		t.Fatalf("after cancelled calls: %v; want a token", err)
	}
}

func TestBreakerOff(t *testing.T) {
	t.Parallel()
	l, c := newLoginFixture(t, func(cfg *LoginClientConfig) {
		cfg.MaxRetries = -1
		cfg.Breaker = BreakerConfig{FailureThreshold: -1}
	})
	l.Script(loginID, repeat(s503(), 20)...)
	for range 20 {
		if _, err := c.Exchange(context.Background(), euWest1(t), loginCreds()); errors.Is(err, ErrCircuitOpen) {
			t.Fatal("a breaker that is off opened")
		}
	}
	if n := l.TotalCalls(); n != 20 {
		t.Errorf("login calls = %d, want 20", n)
	}
}

func TestBreakerMetrics(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	l, c := newLoginFixture(t, func(cfg *LoginClientConfig) {
		cfg.MeterProvider = mp
		cfg.MaxRetries = -1
		// Opens at the first 503 after the one success: 1 of 2 attempts.
		cfg.Breaker = BreakerConfig{FailureThreshold: 1, FailureRate: 0.5, OpenDuration: shortOpen, HalfOpenProbes: 1}
	})
	host := hostKey(mustURL(t, l.URL()))
	attrs := "{host=" + host + ",upstream=genesys_login}"
	exchange := func() error {
		_, err := c.Exchange(context.Background(), euWest1(t), loginCreds())
		return err
	}
	if err := exchange(); err != nil {
		t.Fatal(err)
	}
	if got := collectMetrics(t, reader); got["token_sidecar.upstream.circuit.state"+attrs] != 0 {
		t.Errorf("state %v, want 0 (closed)", got["token_sidecar.upstream.circuit.state"+attrs])
	}
	l.Script(loginID, s503())
	exchange()
	exchange()
	exchange()
	got := collectMetrics(t, reader)
	for k, v := range map[string]float64{
		"token_sidecar.upstream.circuit.state" + attrs:                                                    2,
		"token_sidecar.upstream.circuit.rejected" + attrs:                                                 2,
		"token_sidecar.upstream.circuit.transitions{host=" + host + ",state=open,upstream=genesys_login}": 1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, keys(got))
		}
	}
	time.Sleep(shortOpen + 50*time.Millisecond)
	if err := exchange(); err != nil {
		t.Fatal(err)
	}
	got = collectMetrics(t, reader)
	for k, v := range map[string]float64{
		"token_sidecar.upstream.circuit.state" + attrs:                                                         0,
		"token_sidecar.upstream.circuit.transitions{host=" + host + ",state=half-open,upstream=genesys_login}": 1,
		"token_sidecar.upstream.circuit.transitions{host=" + host + ",state=closed,upstream=genesys_login}":    1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestBreakerConfigDefaultsAndValidation(t *testing.T) {
	t.Parallel()
	b, err := newBreakers("x", BreakerConfig{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.minAttempts != 10 || b.failureRate != 0.5 || b.window != 10*time.Second || b.openDuration != 10*time.Second || b.halfOpenProbes != 2 {
		t.Errorf("defaults %+v", b)
	}
	// The minimum sample is the fewest attempts in which the threshold's
	// failures make the rate: ⌈threshold / rate⌉.
	for _, tc := range []struct {
		cfg  BreakerConfig
		want uint
	}{
		{BreakerConfig{FailureThreshold: 7}, 14},
		{BreakerConfig{FailureThreshold: 5, FailureRate: 1}, 5},
		{BreakerConfig{FailureThreshold: 5, FailureRate: 0.25}, 20},
		{BreakerConfig{FailureThreshold: 3, FailureRate: 0.3}, 10}, // 3/0.3 is 10.000000000000002 in float64
		{BreakerConfig{FailureThreshold: 5, FailureRate: 0.3}, 17},
		{BreakerConfig{FailureThreshold: 1, FailureRate: 0.9}, 2},
		{BreakerConfig{FailureThreshold: 1000, FailureRate: 0.01}, 100000},
	} {
		b, err := newBreakers("x", tc.cfg, nil, nil)
		if err != nil || b.minAttempts != tc.want {
			t.Errorf("%+v: minimum sample %v (%v), want %d", tc.cfg, b, err, tc.want)
		}
	}
	if b, _ := newBreakers("x", BreakerConfig{Window: time.Minute}, nil, nil); b.window != time.Minute {
		t.Errorf("window %v, want 1m", b.window)
	}
	if b, err := newBreakers("x", BreakerConfig{FailureThreshold: -1}, nil, nil); b != nil || err != nil {
		t.Errorf("negative threshold: %v %v; want no breakers", b, err)
	}
	for _, tc := range []struct {
		cfg     BreakerConfig
		wantErr string
	}{
		{BreakerConfig{FailureRate: -0.5}, "FailureRate"},
		{BreakerConfig{FailureRate: 1.01}, "FailureRate"},
		{BreakerConfig{FailureRate: math.NaN()}, "FailureRate"},
		{BreakerConfig{Window: -time.Second}, "Window"},
		{BreakerConfig{Window: 10}, "Window"}, // 10 ns: a count of attempts, as Window used to be
		{BreakerConfig{Window: 99 * time.Millisecond}, "Window"},
		{BreakerConfig{HalfOpenProbes: -1}, "HalfOpenProbes"},
		{BreakerConfig{OpenDuration: -time.Second}, "OpenDuration"},
	} {
		if _, err := NewLoginClient(LoginClientConfig{CallConfig: CallConfig{Breaker: tc.cfg}}); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%+v: error %v, want one naming %s", tc.cfg, err, tc.wantErr)
		}
		if _, err := NewTenantClient(TenantClientConfig{BaseURL: "http://127.0.0.1:9", CallConfig: CallConfig{Breaker: tc.cfg}}); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%+v: Tenant Service client error %v, want one naming %s", tc.cfg, err, tc.wantErr)
		}
	}
}

func TestBreakerCountsOnlyHostFaults(t *testing.T) {
	t.Parallel()
	c := testCaller(t, 0.5)
	cases := []struct {
		o    outcome
		want bool
	}{
		{outcome{status: 500}, true},
		{outcome{status: 503}, true},
		{outcome{status: 408}, true},
		{outcome{err: fmt.Errorf("x: %w", ErrAttemptTimeout)}, true},
		{outcome{err: errors.New("connection refused")}, true},
		{outcome{status: 200}, false},
		{outcome{status: 400, body: []byte(`{"error":"invalid_client"}`)}, false},
		{outcome{status: 400, body: []byte(`{"error":"invalid_request","description":"rate limit exceeded"}`)}, false},
		{outcome{status: 401}, false},
		{outcome{status: 404}, false},
		{outcome{status: 429}, false},
		{outcome{err: context.Canceled}, false},
		{outcome{err: context.DeadlineExceeded}, false},
		{outcome{status: 200, err: errBodyTooLarge}, false},
	}
	for _, tc := range cases {
		if tc.o.header == nil {
			tc.o.header = http.Header{}
		}
		if got := classifyLogin(c, &tc.o).hostFault; got != tc.want {
			t.Errorf("status %d err %v: hostFault %v, want %v", tc.o.status, tc.o.err, got, tc.want)
		}
	}
}

// tenantBreaker returns the breaker of the Tenant Service client c for the
// fake at base.
func tenantBreaker(t *testing.T, c *TenantClient, base string) *hostBreaker {
	t.Helper()
	return c.call.breakers.forHost(hostKey(mustURL(t, base)))
}

// TestBreakerStaysClosedWhileAMinorityFails is the load test's finding: one
// tenant whose lookups answer 503 (3 attempts each, with the default
// retries) amid other tenants' successes must not open the Tenant Service's
// breaker, even when its bursts put 5 failures within 10 consecutive
// attempts — which opened the old count-based breaker ("5 of the last 10")
// and answered every other tenant 503 TENANT_SERVICE_UNAVAILABLE.
func TestBreakerStaysClosedWhileAMinorityFails(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	const good = 12
	for i := range good {
		ts.SetCredentials(fmt.Sprintf("good-%02d", i), acmeCreds)
	}
	const rounds = 5
	ts.Script("bad", "genesys", repeat(s503(), rounds*2*3)...)
	c := newTenantClient(t, ts.URL()) // default breaker and retries; fast backoff
	cb := tenantBreaker(t, c, ts.URL())

	okCall := func(tenant string) {
		t.Helper()
		if _, err := c.GenesysCredentials(context.Background(), tenant); err != nil {
			t.Fatalf("%s: %v; a healthy tenant is refused", tenant, err)
		}
	}
	badCall := func() {
		t.Helper()
		_, err := c.GenesysCredentials(context.Background(), "bad")
		if e := asError(t, err, CodeTenantServiceUnavailable); errors.Is(err, ErrCircuitOpen) || e.Attempts != 3 || e.Status != http.StatusServiceUnavailable {
			t.Fatalf("bad tenant: %v (attempts %d); want its 3 attempts to reach the host", err, e.Attempts)
		}
	}
	start := time.Now()
	// Each round: 10 successes, then 3 failures, 2 successes, 3 failures —
	// 6 of 8 consecutive attempts fail, a third of the round's 18.
	for range rounds {
		for i := range 10 {
			okCall(fmt.Sprintf("good-%02d", i))
		}
		badCall()
		okCall("good-10")
		okCall("good-11")
		badCall()
		if s := cb.State(); s != circuitbreaker.ClosedState {
			t.Fatalf("breaker %s after a minority of failures, want closed", s)
		}
	}
	if took := time.Since(start); took > 9*time.Second {
		t.Fatalf("took %v: the attempts did not all fall into one 10 s window, so the test proves nothing", took)
	}
	if n := ts.TotalCalls(); n != rounds*18 {
		t.Errorf("Tenant Service calls = %d, want %d", n, rounds*18)
	}

	// The same attempts, in the order the host saw them, open the old
	// count-based breaker.
	old := circuitbreaker.NewBuilder[any]().WithFailureThresholdRatio(5, 10).WithDelay(time.Minute).Build()
	failed := 0
	for i, r := range ts.Requests() {
		if strings.Contains(r.EscapedPath, "/tenants/bad/") {
			old.RecordFailure()
			failed++
		} else {
			old.RecordSuccess()
		}
		if i == 17 && !old.IsOpen() {
			t.Errorf("the old rule (5 of the last 10) stays closed after the first round; the interleaving proves nothing")
		}
	}
	if failed != rounds*6 {
		t.Errorf("%d failed attempts, want %d", failed, rounds*6)
	}
}

// TestBreakerOpensAtTheMinimumSample: when every attempt fails, the breaker
// opens at the attempt that completes the minimum sample, ⌈threshold /
// rate⌉ — not before, however many failures in a row came first.
func TestBreakerOpensAtTheMinimumSample(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  BreakerConfig
		want int
	}{
		{"defaults", BreakerConfig{}, 10},
		{"threshold 3 rate 0.3", BreakerConfig{FailureThreshold: 3, FailureRate: 0.3}, 10},
		{"threshold 2 rate 0.25", BreakerConfig{FailureThreshold: 2, FailureRate: 0.25}, 8},
		{"threshold 4 rate 1", BreakerConfig{FailureThreshold: 4, FailureRate: 1}, 4},
		{"threshold 1", BreakerConfig{FailureThreshold: 1}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newFakeTenantService(t)
			for i := 1; i <= tc.want; i++ {
				ts.Script(fmt.Sprintf("t%02d", i), "genesys", s503())
			}
			c := newTenantClient(t, ts.URL(), func(cfg *TenantClientConfig) {
				cfg.MaxRetries = -1 // one attempt per call: calls count attempts
				cfg.Breaker = tc.cfg
			})
			cb := tenantBreaker(t, c, ts.URL())
			for i := 1; i <= tc.want; i++ {
				// Each attempt another tenant's: enough tenants fail.
				_, err := c.GenesysCredentials(context.Background(), fmt.Sprintf("t%02d", i))
				if e := asError(t, err, CodeTenantServiceUnavailable); errors.Is(err, ErrCircuitOpen) || e.Attempts != 1 {
					t.Fatalf("attempt %d: %v; want it to reach the host", i, err)
				}
				if open := cb.State() == circuitbreaker.OpenState; open != (i == tc.want) {
					t.Fatalf("after %d failed attempts the breaker is %s; want it to open at %d", i, cb.State(), tc.want)
				}
			}
			_, err := c.GenesysCredentials(context.Background(), "acme")
			if !errors.Is(err, ErrCircuitOpen) || ts.TotalCalls() != tc.want {
				t.Errorf("after opening: %v, %d calls; want a refusal and %d calls", err, ts.TotalCalls(), tc.want)
			}
		})
	}
}

// TestBreakerOpensOnTenantServiceOutageWithRetries: the defaults with the
// default retries, every lookup failing: four tenants' 3 attempts each are
// held back (4 tenants are not 5), then the fifth tenant's first attempt
// makes 5 tenants and 13 failed attempts and opens the breaker, which ends
// that call without its retries; the sixth is refused.
func TestBreakerOpensOnTenantServiceOutageWithRetries(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	for i := range 6 {
		ts.Script(fmt.Sprintf("t%d", i), "genesys", s503(), s503(), s503())
	}
	c := newTenantClient(t, ts.URL())
	cb := tenantBreaker(t, c, ts.URL())
	for i, want := range []int{3, 3, 3, 3, 1} {
		_, err := c.GenesysCredentials(context.Background(), fmt.Sprintf("t%d", i))
		if e := asError(t, err, CodeTenantServiceUnavailable); errors.Is(err, ErrCircuitOpen) || e.Attempts != want {
			t.Fatalf("tenant %d: %v, %d attempts; want %d attempts", i, err, e.Attempts, want)
		}
	}
	if cb.State() != circuitbreaker.OpenState || ts.TotalCalls() != 13 {
		t.Fatalf("breaker %s after %d attempts; want open after 13", cb.State(), ts.TotalCalls())
	}
	_, err := c.GenesysCredentials(context.Background(), "t5")
	if e := asError(t, err, CodeTenantServiceUnavailable); !errors.Is(err, ErrCircuitOpen) || e.Attempts != 0 || ts.TotalCalls() != 13 {
		t.Errorf("tenant 5: %v after %d calls; want a refusal without an attempt", err, ts.TotalCalls())
	}
}

// TestBreakerForgetsFailuresOutsideTheWindow: failures older than the
// window no longer count, so two bursts of 9 failures a window apart never
// open a breaker whose minimum sample is 10 (the old rule counted attempts,
// not time, and opened at the fifth).
func TestBreakerForgetsFailuresOutsideTheWindow(t *testing.T) {
	t.Parallel()
	const window = time.Second
	ts := newFakeTenantService(t)
	for i := range 19 {
		ts.Script(fmt.Sprintf("t%02d", i), "genesys", s503())
	}
	c := newTenantClient(t, ts.URL(), func(cfg *TenantClientConfig) {
		cfg.MaxRetries = -1
		cfg.Breaker = BreakerConfig{Window: window}
	})
	cb := tenantBreaker(t, c, ts.URL())
	next := 0 // every attempt another tenant's: enough tenants fail
	burst := func(n int) time.Duration {
		start := time.Now()
		for range n {
			next++
			if _, err := c.GenesysCredentials(context.Background(), fmt.Sprintf("t%02d", next-1)); errors.Is(err, ErrCircuitOpen) {
				t.Fatalf("refused after %d calls; want the breaker closed", ts.TotalCalls())
			}
		}
		return time.Since(start)
	}
	burst(9)
	time.Sleep(window + window/5) // every bucket of the first burst expires
	if took := burst(9); cb.State() != circuitbreaker.ClosedState {
		t.Fatalf("breaker %s after two bursts of 9 a window apart; want closed", cb.State())
	} else if took > window/2 {
		t.Skipf("the second burst took %v; too slow to prove the next failure completes a sample within the window", took)
	}
	// The 10th failure within the window completes the sample: open.
	burst(1)
	if cb.State() != circuitbreaker.OpenState || ts.TotalCalls() != 19 {
		t.Errorf("breaker %s after %d calls; want open after the 10th failure within the window", cb.State(), ts.TotalCalls())
	}
}
