package main

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 5000 * time.Microsecond},
		{0.99, 9900 * time.Microsecond},
		{0.999, 9990 * time.Microsecond},
		{1, 10000 * time.Microsecond},
	} {
		got := h.quantile(tc.q)
		if rel := math.Abs(float64(got-tc.want)) / float64(tc.want); rel > 1.0/subBuckets {
			t.Errorf("quantile(%v) = %v, want %v within %.2f%%", tc.q, got, tc.want, 100.0/subBuckets)
		}
	}
	if h.max != 10*time.Millisecond || h.n != 10000 {
		t.Errorf("max %v, n %d", h.max, h.n)
	}
	var empty histogram
	if empty.quantile(0.99) != 0 || empty.mean() != 0 {
		t.Error("an empty histogram has non-zero quantiles")
	}
}

func TestBucketsCoverEveryValue(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 1<<40 + 12345, math.MaxInt64, math.MaxUint64} {
		i := bucketOf(v)
		if i < prev || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d after %d (of %d)", v, i, prev, histBuckets)
		}
		if up := bucketUpper(i); up < v || (v >= subBuckets && float64(up-v) > float64(v)/subBuckets) {
			t.Errorf("bucketUpper(bucketOf(%d)) = %d", v, up)
		}
		prev = i
	}
}

func TestParseMix(t *testing.T) {
	cum, err := parseMix("hit=50,miss=25,unavailable=25")
	if err != nil {
		t.Fatal(err)
	}
	want := [numClasses]float64{0.5, 0.75, 0.75, 0.75, 1}
	if cum != want {
		t.Errorf("cumulative %v, want %v", cum, want)
	}
	for _, bad := range []string{"", "hit", "hit=x", "bogus=1", "hit=-1", "hit=0"} {
		if _, err := parseMix(bad); err == nil {
			t.Errorf("parseMix(%q) accepted", bad)
		}
	}
	counts := [numClasses]int{}
	for i := range int64(10000) {
		counts[pickClass(cum, i)]++
	}
	if counts[classHit] < 4700 || counts[classHit] > 5300 || counts[classRefresh] != 0 {
		t.Errorf("class counts %v for 50/25/25", counts)
	}
}

// TestGenerators runs both loops briefly against a local server that
// answers 200 or a JSON error, and checks what they counted.
func TestGenerators(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Token-Request") != "true" {
			t.Error("request without X-Token-Request")
		}
		if r.URL.Query().Get("fail") != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"code":"CREDENTIALS_NOT_FOUND","message":"x"}`))
			return
		}
		w.Write([]byte(`{"access_token":"x"}`))
	}))
	defer srv.Close()
	g := newGenerator()
	defer g.closeIdle()
	next := func(i int64) request {
		if i%4 == 0 {
			return request{class: 1, method: http.MethodGet, url: srv.URL + "/?fail=1"}
		}
		return request{method: http.MethodGet, url: srv.URL + "/"}
	}
	ctx := context.Background()

	res, err := g.closedLoop(ctx, closedSpec{workers: 4, duration: 10 * time.Second, count: 200, classes: 2, next: next})
	if err != nil {
		t.Fatal(err)
	}
	if res.completed != 200 || res.rec.classes[0].statuses["200"] != 150 || res.rec.classes[1].statuses["404 CREDENTIALS_NOT_FOUND"] != 50 {
		t.Errorf("closed loop: %d completed, %v / %v", res.completed, res.rec.classes[0].statuses, res.rec.classes[1].statuses)
	}

	res, err = g.openLoop(ctx, openSpec{rate: 1000, duration: 100 * time.Millisecond, workers: 4, classes: 2, next: next})
	if err != nil {
		t.Fatal(err)
	}
	if res.completed != 100 || res.lag.n != 100 || res.rec.total().statuses["200"] != 75 {
		t.Errorf("open loop: %d completed, lag count %d, %v", res.completed, res.lag.n, res.rec.total().statuses)
	}
}

// TestMedianRoundRatio: the table's figure is the median of the rounds'
// ratios, not of their throughputs, the middle two averaged for an even
// count.
func TestMedianRoundRatio(t *testing.T) {
	round := func(hit, static float64) roundResult {
		return roundResult{Hit: throughput{RPS: hit}, Static: throughput{RPS: static}}
	}
	for _, tc := range []struct {
		rounds []roundResult
		want   float64
	}{
		{[]roundResult{round(90, 100)}, 0.9},
		{[]roundResult{round(100, 100), round(80, 100), round(90, 100)}, 0.9},
		{[]roundResult{round(100, 100), round(80, 100), round(90, 100), round(10, 1)}, 0.95},
	} {
		if got := medianRoundRatio(tc.rounds); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("medianRoundRatio(%v) = %v, want %v", tc.rounds, got, tc.want)
		}
	}
}
