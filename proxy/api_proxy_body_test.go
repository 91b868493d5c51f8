package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// bodyRequest is a /proxy/ request whose body is r, announced as length
// (-1: chunked).
func bodyRequest(r io.Reader, length int64) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, "http://sidecar/proxy/x", io.NopCloser(r))
	req.ContentLength = length
	if length < 0 {
		req.TransferEncoding = []string{"chunked"}
	}
	return req
}

// A body that announces 1 MiB and sends one byte holds a small buffer, not
// the announced MiB, both in memory and in the shared budget.
func TestAPIProxyBuffersOnlyTheBytesThatArrive(t *testing.T) {
	budget := newRetryBudget(DefaultAPIRetryBuffer)
	pr, pw := io.Pipe()
	call := &apiCall{}
	done := make(chan error, 1)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	go func() { done <- call.takeBody(bodyRequest(pr, maxReplayBody), budget) }()
	if _, err := pw.Write([]byte("x")); err != nil { // returns once takeBody has read it
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)

	if used := budget.inUse(); used != firstBodyChunk {
		t.Errorf("budget in use after 1 byte of an announced 1 MiB: %d bytes, want %d", used, firstBodyChunk)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > maxReplayBody/4 {
		t.Errorf("%d bytes allocated for 1 byte of an announced 1 MiB body", grew)
	}
	pw.CloseWithError(errors.New("client went away"))
	if err := <-done; err == nil {
		t.Fatal("takeBody read a broken body without an error")
	}
	call.releaseBody(budget)
	if used := budget.inUse(); used != 0 {
		t.Fatalf("budget in use after release: %d", used)
	}
}

// The budget is shared: while one request's buffer takes all of it, another
// request's body streams (every byte, in order) and is not replayable; once
// the first is done, bodies are buffered again.
func TestAPIProxyRetryBudgetIsSharedByAllRequests(t *testing.T) {
	const size = 64 << 10
	budget := newRetryBudget(size)
	pr, pw := io.Pipe()
	first := &apiCall{}
	done := make(chan error, 1)
	go func() { done <- first.takeBody(bodyRequest(pr, maxReplayBody), budget) }()
	if _, err := pw.Write(bytes.Repeat([]byte("a"), size/2+1)); err != nil {
		t.Fatal(err)
	}
	if used := budget.inUse(); used != size {
		t.Fatalf("budget in use with %d bytes read: %d, want all %d", size/2+1, used, size)
	}

	payload := strings.Repeat("0123456789abcdef", 1<<10) // 16 KiB
	for _, length := range []int64{int64(len(payload)), -1} {
		second := &apiCall{}
		req := bodyRequest(strings.NewReader(payload), length)
		if err := second.takeBody(req, budget); err != nil {
			t.Fatal(err)
		}
		if second.replayable {
			t.Fatalf("length %d: replayable with the budget spent", length)
		}
		got, _ := io.ReadAll(req.Body)
		if string(got) != payload {
			t.Fatalf("length %d: streamed %d bytes, want the %d sent", length, len(got), len(payload))
		}
		second.releaseBody(budget)
	}

	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !first.replayable || len(first.body) != size/2+1 {
		t.Fatalf("first body: replayable %v, %d bytes", first.replayable, len(first.body))
	}
	first.releaseBody(budget)
	third := &apiCall{}
	if err := third.takeBody(bodyRequest(strings.NewReader(payload), -1), budget); err != nil || !third.replayable {
		t.Fatalf("after the first was done: replayable %v, %v", third.replayable, err)
	}
	if string(third.body) != payload || budget.inUse() != int64(cap(third.body)) {
		t.Fatalf("third: %d bytes buffered, budget %d for a buffer of %d", len(third.body), budget.inUse(), cap(third.body))
	}
}

// Through the handler: a body the retry budget cannot hold is sent whole and
// its 401 goes back to the app; one that fits is retried.
func TestAPIProxyBodyPastTheRetryBudgetIsNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name    string
		budget  int64
		size    int
		retried bool
	}{
		{"fits", 64 << 10, 16 << 10, true},
		{"past the budget", 8 << 10, 16 << 10, false},
		{"no budget", -1, 10, false},
		{"no budget, no body", -1, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, bearerAnswer("new"))
			fc := retryCache(api.srv.URL, "new")
			url := startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme"; c.APIRetryBuffer = tc.budget })
			payload := bytes.Repeat([]byte("z"), tc.size)
			resp, _ := proxyDo(t, http.MethodPost, url+"/proxy/upload", bytes.NewReader(payload), nil)
			reqs := api.requests()
			for i, r := range reqs {
				if !bytes.Equal(r.body, payload) {
					t.Errorf("attempt %d: body of %d bytes, want the %d sent", i+1, len(r.body), len(payload))
				}
			}
			want, attempts := http.StatusUnauthorized, 1
			if tc.retried {
				want, attempts = http.StatusOK, 2
			}
			if resp.StatusCode != want || len(reqs) != attempts {
				t.Fatalf("status %d after %d attempts; want %d after %d", resp.StatusCode, len(reqs), want, attempts)
			}
		})
	}
}
