package main

import (
	"strings"
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
