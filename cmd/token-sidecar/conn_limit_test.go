package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

// A server whose every slot is busy waits in Accept; shutting it down must
// wake that Accept, and every slot is given back once the connections close.
func TestConnLimiterShutdownWithEverySlotBusy(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
	})}
	ln := limitConnections(srv, inner, 1).(*connLimiter)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	busy := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + inner.Addr().String())
		if err == nil {
			resp.Body.Close()
		}
		busy <- err
	}()
	<-started
	// A second client waits in the backlog: Accept waits for room.
	waiting, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Shutdown while Accept waited for room")
	}
	close(release)
	if err := <-busy; err != nil {
		t.Fatalf("the busy request: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.open != 0 || ln.idle.len != 0 || ln.idle.head != nil {
		t.Fatalf("after shutdown: %d connections counted, %d idle; want none", ln.open, ln.idle.len)
	}
}

// At the limit, the connection that has waited longest for a request is the
// one closed, whether it is an idle keep-alive connection or a silent new
// one.
func TestConnLimiterClosesTheLongestIdleFirst(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	ln := limitConnections(srv, inner, 2).(*connLimiter)
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + inner.Addr().String()

	a := dialKept(t, url)
	if code, err := a.get("/"); err != nil || code != 200 {
		t.Fatalf("a: %d %v", code, err)
	}
	waitIdle := func(n int) {
		pollUntil(t, func() bool {
			ln.mu.Lock()
			defer ln.mu.Unlock()
			return ln.idle.len == n
		})
	}
	waitIdle(1)
	b := dialKept(t, url) // silent, and newer than a's idle wait
	waitIdle(2)

	c := dialKept(t, url)
	if code, err := c.get("/"); err != nil || code != 200 {
		t.Fatalf("c: %d %v", code, err)
	}
	if !a.closedByServer(t) || b.closedByServer(t) {
		t.Fatal("c's arrival did not close a, the longest idle, alone")
	}
	d := dialKept(t, url)
	if code, err := d.get("/"); err != nil || code != 200 {
		t.Fatalf("d: %d %v", code, err)
	}
	if !b.closedByServer(t) || c.closedByServer(t) {
		t.Fatal("d's arrival did not close b, then the longest idle, alone")
	}
	if n := ln.evicted.Load(); n != 2 {
		t.Fatalf("evicted = %d, want 2", n)
	}
}
