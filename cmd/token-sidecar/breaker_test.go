package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/upstream"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// TestLoginOutageOpensTheBreaker is issue 6's acceptance: with the login
// failing for every tenant, 30 different tenants in a row cause at most 45
// login attempts in total, and the last answer comes in under 200 ms
// because the login host's breaker is open.
func TestLoginOutageOpensTheBreaker(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for retry backoff")
	}
	f := newFakes(t)
	const tenants = 30
	unavailable := upstreamtest.Step{Status: http.StatusServiceUnavailable, Body: []byte(`{"error":"unavailable"}`)}
	for i := range tenants {
		id := f.addTenant(fmt.Sprintf("outage-%02d", i))
		f.login.Script(id, unavailable, unavailable, unavailable) // every attempt the default retries make
	}
	s := startSidecar(t, f.env()) // default breaker and retry settings

	var last tokenAnswer
	var took time.Duration
	for i := range tenants {
		start := time.Now()
		last = s.token(t, fmt.Sprintf("outage-%02d", i))
		took = time.Since(start)
		if last.Status != http.StatusServiceUnavailable || last.Code != "OAUTH_EXCHANGE_FAILED" {
			t.Fatalf("tenant %d: status %d code %q; want 503 OAUTH_EXCHANGE_FAILED", i, last.Status, last.Code)
		}
		secs, err := strconv.Atoi(last.Header.Get("Retry-After"))
		if err != nil || secs < 1 {
			t.Fatalf("tenant %d: Retry-After %q", i, last.Header.Get("Retry-After"))
		}
	}
	t.Logf("figure: %d login calls for %d tenants against a dead login; the last answer took %v", f.login.TotalCalls(), tenants, took)
	if n := f.login.TotalCalls(); n > 45 {
		t.Errorf("%d login attempts for %d tenants, want at most 45", n, tenants)
	}
	if took >= 200*time.Millisecond {
		t.Errorf("last answer took %v, want under 200 ms (breaker open)", took)
	}
	if ra, _ := strconv.Atoi(last.Header.Get("Retry-After")); ra > 10 {
		t.Errorf("Retry-After %d s while the breaker opens for 10 s", ra)
	}

	host := strings.ToLower(f.login.URL())
	logs := s.stderr.String()
	if !strings.Contains(logs, `"level":"WARN","msg":"circuit breaker opened: calls to the host are refused","upstream":"genesys_login","host":"`+host+`"`) {
		t.Errorf("no warning that the login host's breaker opened:\n%s", logs)
	}
	metrics := scrape(t, s.adminURL+"/metrics")
	for _, want := range []string{
		`token_sidecar_upstream_circuit_state{host="` + host + `",otel_scope_name="github.com/token-sidecar/token-sidecar/upstream"`,
		`token_sidecar_upstream_circuit_rejected_total{host="` + host + `"`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "token_sidecar_upstream_circuit_state{") && strings.Contains(line, `upstream="genesys_login"`) &&
			!strings.HasSuffix(line, " 2") {
			t.Errorf("login breaker state %q, want 2 (open)", line)
		}
	}
}

// TestFewFailingTenantsDoNotOpenTheBreaker is issue 10 item 11 through
// run(): four requests for tenants whose Tenant Service answer is 500 (12
// attempts within about 2 s) opened the Tenant Service breaker, and every
// cold tenant then got 503. Four tenants are fewer than
// -breaker-failure-threshold (5): the breaker stays closed, a cold tenant
// and a forced refresh are served, and /metrics says closed.
func TestFewFailingTenantsDoNotOpenTheBreaker(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for retry backoff")
	}
	f := newFakes(t)
	f.addTenant("warm")
	f.addTenant("cold")
	serverError := upstreamtest.Step{Status: http.StatusInternalServerError, Body: []byte(`{"error":"boom"}`)}
	for i := range 4 {
		f.ts.Script(fmt.Sprintf("broken-%d", i), "genesys", serverError, serverError, serverError)
	}
	s := startSidecar(t, f.env()) // default breaker and retry settings
	if a := s.token(t, "warm"); a.Status != http.StatusOK {
		t.Fatalf("warm: %d %s", a.Status, a.Code)
	}

	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			if a := s.token(t, fmt.Sprintf("broken-%d", i)); a.Status != http.StatusServiceUnavailable || a.Code != "TENANT_SERVICE_UNAVAILABLE" {
				t.Errorf("broken-%d: %d %s; want 503 TENANT_SERVICE_UNAVAILABLE", i, a.Status, a.Code)
			}
		})
	}
	wg.Wait()
	for i := range 4 {
		if n := f.ts.Calls(fmt.Sprintf("broken-%d", i), "genesys"); n != 3 {
			t.Errorf("broken-%d: %d Tenant Service attempts, want 3", i, n)
		}
	}

	if a := s.token(t, "cold"); a.Status != http.StatusOK {
		t.Errorf("cold tenant after 4 failing ones: %d %s; want 200 (breaker closed)", a.Status, a.Code)
	}
	if a := do(t, http.MethodPost, s.tokenURL+"/token/refresh?tenant=warm", nil); a.Status != http.StatusOK {
		t.Errorf("forced refresh of a healthy tenant: %d %s; want 200", a.Status, a.Code)
	}
	if strings.Contains(s.stderr.String(), "circuit breaker opened") {
		t.Errorf("a breaker opened:\n%s", s.stderr.String())
	}
	for _, line := range strings.Split(scrape(t, s.adminURL+"/metrics"), "\n") {
		if strings.HasPrefix(line, "token_sidecar_upstream_circuit_state{") && strings.Contains(line, `upstream="tenant_service"`) &&
			!strings.HasSuffix(line, " 0") {
			t.Errorf("Tenant Service breaker state %q, want 0 (closed)", line)
		}
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBreakerSettings(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		want upstream.BreakerConfig
	}{
		"defaults": {nil, nil, upstream.BreakerConfig{FailureThreshold: 5, FailureRate: 0.5, Window: 10 * time.Second, OpenDuration: 10 * time.Second, HalfOpenProbes: 2}},
		"env": {nil, map[string]string{"SIDECAR_BREAKER_FAILURE_THRESHOLD": "8", "SIDECAR_BREAKER_FAILURE_RATE": "0.25", "SIDECAR_BREAKER_WINDOW": "1m",
			"SIDECAR_BREAKER_OPEN_DURATION": "30s", "SIDECAR_BREAKER_HALF_OPEN_PROBES": "1"},
			upstream.BreakerConfig{FailureThreshold: 8, FailureRate: 0.25, Window: time.Minute, OpenDuration: 30 * time.Second, HalfOpenProbes: 1}},
		"flags": {[]string{"-breaker-failure-threshold", "3", "-breaker-failure-rate", "1", "-breaker-window", "2s", "-breaker-open-duration", "2s", "-breaker-half-open-probes", "3"}, nil,
			upstream.BreakerConfig{FailureThreshold: 3, FailureRate: 1, Window: 2 * time.Second, OpenDuration: 2 * time.Second, HalfOpenProbes: 3}},
		"flag over env": {[]string{"-breaker-failure-rate", "0.75", "-breaker-window", "30s"}, map[string]string{"SIDECAR_BREAKER_FAILURE_RATE": "0.1", "SIDECAR_BREAKER_WINDOW": "5s"},
			upstream.BreakerConfig{FailureThreshold: 5, FailureRate: 0.75, Window: 30 * time.Second, OpenDuration: 10 * time.Second, HalfOpenProbes: 2}},
		"off": {[]string{"-breaker-failure-threshold", "0"}, nil, upstream.BreakerConfig{FailureThreshold: -1}},
	} {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{"SIDECAR_DEMO": "true"}
			for k, v := range tc.env {
				env[k] = v
			}
			cfg, err := parseConfig(tc.args, func(k string) string { return env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.breaker(); got != tc.want {
				t.Errorf("breaker %+v, want %+v", got, tc.want)
			}
		})
	}
	for _, args := range [][]string{
		{"-breaker-failure-threshold", "-1"},
		{"-breaker-failure-threshold", "1001"},
		{"-breaker-failure-rate", "0"},
		{"-breaker-failure-rate", "-0.5"},
		{"-breaker-failure-rate", "1.5"},
		{"-breaker-failure-rate", "NaN"},
		{"-breaker-window", "0s"},
		{"-breaker-window", "-10s"},
		{"-breaker-window", "500ms"},
		{"-breaker-window", "11m"},
		{"-breaker-open-duration", "0s"},
		{"-breaker-half-open-probes", "0"},
	} {
		if _, err := parseConfig(append([]string{"-demo"}, args...), func(string) string { return "" }, io.Discard); err == nil ||
			!strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: error %v; want one naming %s", args, err, args[0])
		}
	}
	for _, tc := range []struct{ env, value, want string }{
		{"SIDECAR_BREAKER_FAILURE_RATE", "half", `invalid SIDECAR_BREAKER_FAILURE_RATE="half"`},
		{"SIDECAR_BREAKER_FAILURE_RATE", "2", "-breaker-failure-rate must be above 0 and at most 1, got 2"},
		{"SIDECAR_BREAKER_WINDOW", "10", `invalid SIDECAR_BREAKER_WINDOW="10"`},
		{"SIDECAR_BREAKER_WINDOW", "1h", "-breaker-window must be between 1s and 10m, got 1h0m0s"},
	} {
		env := map[string]string{"SIDECAR_DEMO": "true", tc.env: tc.value}
		if _, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%s: error %v; want one containing %q", tc.env, tc.value, err, tc.want)
		}
	}
	// The bounds themselves are accepted.
	for _, args := range [][]string{
		{"-breaker-failure-rate", "1"},
		{"-breaker-failure-rate", "0.01"},
		{"-breaker-window", "1s"},
		{"-breaker-window", "10m"},
	} {
		if _, err := parseConfig(append([]string{"-demo"}, args...), func(string) string { return "" }, io.Discard); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}
