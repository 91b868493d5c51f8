package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRawClientAgainstNetHTTP sends the requests the scenarios send to a
// net/http server that answers in each framing the parser must handle.
func TestRawClientAgainstNetHTTP(t *testing.T) {
	var conns atomic.Int32
	var lastReq atomic.Pointer[http.Request]
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastReq.Store(r)
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte(strings.Repeat("a", 100)))
			w.(http.Flusher).Flush() // forces chunked encoding
			w.Write([]byte(strings.Repeat("b", 5000)))
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte("{}"))
		case "/error":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"code":"TENANT_SERVICE_UNAVAILABLE","message":"x"}`))
		case "/plain-error":
			http.Error(w, "no", http.StatusTeapot)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/head":
			w.Header().Set("Content-Length", "20") // announced, never sent to HEAD
		default:
			w.Write([]byte(`{"access_token":"x"}`))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	cl := newRawClient(context.Background())
	defer cl.close()
	for _, tc := range []struct {
		method, path, want string
		conns              int32 // connections opened so far
	}{
		{"GET", "/token?tenant=a%2Fb", "200", 1},
		{"GET", "/chunked", "200", 1},
		{"POST", "/token/refresh?tenant=x", "200", 1},
		{"GET", "/error", "503 TENANT_SERVICE_UNAVAILABLE", 1},
		{"GET", "/plain-error", "418", 1},
		{"GET", "/empty", "204", 1},
		{"HEAD", "/head", "200", 1},
		{"GET", "/", "200", 1}, // the connection is still in step after HEAD
		{"GET", "/close", "200", 1},
		{"GET", "/", "200", 2}, // the server closed the last one
	} {
		status, err := cl.do(request{method: tc.method, url: srv.URL + tc.path})
		if err != nil || status != tc.want {
			t.Errorf("%s %s: %q, %v; want %q", tc.method, tc.path, status, err, tc.want)
		}
		if n := conns.Load(); n != tc.conns {
			t.Errorf("%s %s: %d connections opened, want %d", tc.method, tc.path, n, tc.conns)
		}
		r := lastReq.Load()
		if r.Method != tc.method || r.URL.RequestURI() != tc.path || r.Header.Get("X-Token-Request") != "true" || r.Host != srv.Listener.Addr().String() {
			t.Errorf("server got %s %s Host %q X-Token-Request %q", r.Method, r.URL.RequestURI(), r.Host, r.Header.Get("X-Token-Request"))
		}
	}
}

// TestRawClientFailures checks that a broken answer is counted as a
// transport error and the next request gets a fresh connection, and that a
// cancelled run ends a request in progress as cancelled.
func TestRawClientFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answers := []string{
		"HTTP/1.1 200 OK\r\n\r\n", // no length: unframed
		"garbage\r\n\r\n",         // no status line
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", // then the server hangs up
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
		"", // never answers
	}
	go func() {
		for _, a := range answers {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				if a == "" {
					io.Copy(io.Discard, c) // until the client gives up
					return
				}
				io.WriteString(c, a)
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cl := newRawClient(ctx)
	defer cl.close()
	url := "http://" + ln.Addr().String() + "/token"
	for i, want := range []string{statusTransport, statusTransport, statusTransport, "200"} {
		status, err := cl.do(request{method: "GET", url: url})
		if status != want || (want == statusTransport) != (err != nil) {
			t.Errorf("answer %d (%q): %q, %v; want %q", i, answers[i], status, err, want)
		}
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	if status, err := cl.do(request{method: "GET", url: url}); status != statusCanceled {
		t.Errorf("cancelled during a request: %q, %v; want %q", status, err, statusCanceled)
	}
}

func TestPacerSleepsAtLeastTheDuration(t *testing.T) {
	p, err := newPacer()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	for _, d := range []time.Duration{-time.Second, 0, 200 * time.Microsecond, 3 * time.Millisecond} {
		start := time.Now()
		if err := p.sleep(d); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got < d {
			t.Errorf("sleep(%v) returned after %v", d, got)
		}
	}
}
