package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseWrkSummary(t *testing.T) {
	out := "Running 2s test @ http://127.0.0.1:1/healthz\n  1 threads and 64 connections\n" +
		"wrk-summary duration_us=2000123 requests=50000 connect=0 read=2 write=0 status=7 timeout=1 p50_us=900 p99_us=4000 max_us=9000\n"
	r, err := parseWrkSummary(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 50000 || r.Duration != 2000123*time.Microsecond || r.P99 != 4*time.Millisecond {
		t.Errorf("parsed %+v", r)
	}
	if r.failures() != 10 || r.Errors["status"] != 7 || r.Errors["read"] != 2 || r.Errors["timeout"] != 1 || len(r.Errors) != 3 {
		t.Errorf("errors %v, failures %d", r.Errors, r.failures())
	}
	if got := r.rate(); got < 24998 || got > 24999 {
		t.Errorf("rate %v", got)
	}
	for _, bad := range []string{"", "Requests/sec: 1000\n", "wrk-summary requests=1\n", "wrk-summary duration_us=x requests=1 connect=0 read=0 write=0 status=0 timeout=0\n"} {
		if _, err := parseWrkSummary(bad); err == nil {
			t.Errorf("parseWrkSummary(%q) accepted", bad)
		}
	}
}

func TestParseVegetaCSV(t *testing.T) {
	// Two answers and a transport error, written out of order as vegeta
	// writes them (by completion); bodies are base64.
	csv := strings.Join([]string{
		`1000002000000,404,300000,0,40,,eyJjb2RlIjoiQ1JFREVOVElBTFNfTk9UX0ZPVU5EIn0=,,2,GET,http://h/token?tenant=fail-404-0,`,
		`1000000000000,200,100000,0,20,,e30=,,0,GET,http://h/token?tenant=hot-0,`,
		`1000001000000,0,30000000000,0,0,"Get ""http://h/"": context deadline exceeded",,,1,POST,http://h/token/refresh?tenant=hot-1,`,
	}, "\n") + "\n"
	rs, err := parseVegetaCSV(strings.NewReader(csv))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 {
		t.Fatalf("%d results", len(rs))
	}
	want := []struct {
		seq            int64
		status, method string
	}{{0, "200", "GET"}, {1, statusTimeout, "POST"}, {2, "404 CREDENTIALS_NOT_FOUND", "GET"}}
	for i, w := range want {
		if rs[i].seq != w.seq || rs[i].status != w.status || rs[i].method != w.method {
			t.Errorf("result %d: %+v, want %+v", i, rs[i], w)
		}
	}
	if rs[0].latency != 100*time.Microsecond || !rs[0].sent.Equal(time.Unix(0, 1000000000000)) || rs[0].url != "http://h/token?tenant=hot-0" {
		t.Errorf("result 0: %+v", rs[0])
	}
	if _, err := parseVegetaCSV(strings.NewReader("1,2,3\n")); err == nil {
		t.Error("a short record was accepted")
	}
}

func TestStatusKey(t *testing.T) {
	for _, tc := range []struct {
		code      int
		body, err string
		want      string
	}{
		{200, `{"access_token":"x"}`, "", "200"},
		{503, `{"code":"TENANT_SERVICE_UNAVAILABLE","message":"x"}`, "", "503 TENANT_SERVICE_UNAVAILABLE"},
		{418, "no\n", "", "418"},
		{0, "", "dial tcp: connection refused", statusTransport},
		{0, "", "net/http: request canceled (Client.Timeout exceeded while awaiting headers)", statusTimeout},
		{0, "", "context deadline exceeded", statusTimeout},
	} {
		if got := statusKey(tc.code, []byte(tc.body), tc.err); got != tc.want {
			t.Errorf("statusKey(%d, %q, %q) = %q, want %q", tc.code, tc.body, tc.err, got, tc.want)
		}
	}
}

// TestVegetaSchedule checks that latency counts from the scheduled time: a
// request sent late (all workers busy, or the pacer late) carries its wait.
func TestVegetaSchedule(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	// 1000/s: request i is due at began + (i+1) ms. Request 2 went out
	// 5 ms late and took 1 ms; the others on time, 1 ms each.
	rs := []vegetaResult{
		{seq: 0, sent: t0.Add(1 * ms), latency: ms, status: "200"},
		{seq: 1, sent: t0.Add(2 * ms), latency: ms, status: "200"},
		{seq: 2, sent: t0.Add(8 * ms), latency: ms, status: "200"},
		{seq: 3, sent: t0.Add(4 * ms), latency: ms, status: "503 X"},
	}
	rec := newRecorder(2)
	var lag histogram
	elapsed, released := recordVegeta(rs, rec, &lag, 1000, func(r vegetaResult) int {
		if r.status == "200" {
			return 0
		}
		return 1
	})
	if lag.max != 5*ms || lag.n != 4 {
		t.Errorf("lag max %v over %d", lag.max, lag.n)
	}
	c := rec.classes[0]
	if c.latency.max != 6*ms || c.service.max != ms || c.latency.n != 3 {
		t.Errorf("latency max %v, service max %v, n %d", c.latency.max, c.service.max, c.latency.n)
	}
	if rec.classes[1].statuses["503 X"] != 1 {
		t.Errorf("class 1: %v", rec.classes[1].statuses)
	}
	if elapsed != 9*ms || released != 8*ms {
		t.Errorf("elapsed %v, released %v", elapsed, released)
	}
}

// needWrk skips without wrk, except in CI, which installs it (.ci/run).
func needWrk(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("wrk"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("wrk is not installed, and CI is set: install it (apt-get install -y wrk)")
		}
		t.Skip("wrk is not installed (apt-get install -y wrk)")
	}
}

// tokenServer answers like the sidecar: 200 with a token, or a JSON error
// for ?fail; it counts requests without X-Token-Request.
func tokenServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var missingHeader atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Token-Request") != "true" {
			missingHeader.Add(1)
		}
		if r.URL.Query().Get("fail") != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"code":"CREDENTIALS_NOT_FOUND","message":"x"}`))
			return
		}
		w.Write([]byte(`{"access_token":"x"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &missingHeader
}

// TestWrkRun runs wrk briefly and checks that its summary is read and
// non-2xx answers are counted as errors.
func TestWrkRun(t *testing.T) {
	needWrk(t)
	srv, missing := tokenServer(t)
	script, err := writeWrkScript(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ok, err := runWrk(ctx, wrkSpec{url: srv.URL + "/token?tenant=a", connections: 2, duration: time.Second, script: script})
	if err != nil {
		t.Fatal(err)
	}
	if ok.Requests == 0 || ok.failures() != 0 || ok.Duration < time.Second || ok.CPU <= 0 {
		t.Errorf("wrk on 200s: %+v", ok)
	}
	bad, err := runWrk(ctx, wrkSpec{url: srv.URL + "/token?fail=1", connections: 2, duration: time.Second, script: script})
	if err != nil {
		t.Fatal(err)
	}
	if bad.Requests == 0 || bad.Errors["status"] != bad.Requests {
		t.Errorf("wrk on 404s: %d requests, errors %v", bad.Requests, bad.Errors)
	}
	if n := missing.Load(); n != 0 {
		t.Errorf("%d requests without X-Token-Request", n)
	}
}

// TestVegetaAttack builds the pinned vegeta and runs a short attack at a
// fixed rate over two targets, checking what is read back.
func TestVegetaAttack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds vegeta")
	}
	srv, missing := tokenServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	bin, err := installVegeta(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	targets := []request{
		{method: http.MethodGet, url: srv.URL + "/token?tenant=a"},
		{class: 1, method: http.MethodPost, url: srv.URL + "/token/refresh?tenant=b&fail=1"},
	}
	file, cpu, err := vegetaAttack(ctx, vegetaSpec{bin: bin, dir: dir, rate: 200, duration: 500 * time.Millisecond, workers: 4, procs: 1, targets: targets})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := vegetaResults(ctx, bin, file)
	if err != nil {
		t.Fatal(err)
	}
	// vegeta stops at the duration: a late pacer may not have sent the last.
	if len(rs) < 90 || len(rs) > 100 || cpu <= 0 {
		t.Fatalf("%d results (want 100 at 200/s for 0.5 s), CPU %v", len(rs), cpu)
	}
	for i, r := range rs {
		if r.seq != int64(i) {
			t.Fatalf("result %d has seq %d", i, r.seq)
		}
	}
	n := len(rs)
	rec := newRecorder(2)
	var lag histogram
	recordVegeta(rs, rec, &lag, 200, func(r vegetaResult) int {
		if r.method == http.MethodPost {
			return 1
		}
		return 0
	})
	// The targets alternate: the first half (rounded up) are GETs.
	if got := rec.classes[0].statuses["200"]; got != (n+1)/2 || len(rec.classes[0].statuses) != 1 {
		t.Errorf("GETs: %v of %d", rec.classes[0].statuses, n)
	}
	if got := rec.classes[1].statuses["404 CREDENTIALS_NOT_FOUND"]; got != n/2 || len(rec.classes[1].statuses) != 1 {
		t.Errorf("POSTs: %v of %d", rec.classes[1].statuses, n)
	}
	if lag.n != uint64(n) || len(rec.firstErr) != 0 {
		t.Errorf("lag over %d, first errors %v", lag.n, rec.firstErr)
	}
	if n := missing.Load(); n != 0 {
		t.Errorf("%d requests without X-Token-Request", n)
	}
}
