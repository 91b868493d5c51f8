package main

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Connections beyond -max-connections wait until one closes: a flood of
// clients cannot pin unbounded goroutines and buffers.
func TestMaxConnectionsHoldsFurtherClients(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	s := startSidecar(t, f.env(), "-max-connections", "2")
	addr := strings.TrimPrefix(s.tokenURL, "http://")

	// Two idle connections take both slots (each is held until the server's
	// read-header timeout or until closed).
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond) // let the server accept them

	got := make(chan int, 1)
	go func() {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		req, _ := http.NewRequest("GET", s.tokenURL+"/token?tenant=acme", nil)
		req.Header.Set("X-Token-Request", "true")
		resp, err := c.Do(req)
		if err != nil {
			got <- -1
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	select {
	case code := <-got:
		t.Fatalf("a third client was served (%d) while two connections held every slot", code)
	case <-time.After(300 * time.Millisecond):
	}
	held[0].Close()
	select {
	case code := <-got:
		if code != http.StatusOK {
			t.Fatalf("status %d once a slot was free, want 200", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting client was not served after a slot was freed")
	}
	held[1].Close()
}

// Oversized headers are refused by the server before any handler runs.
func TestOversizedHeadersAreRefused(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	s := startSidecar(t, f.env())
	req, _ := http.NewRequest("GET", s.tokenURL+"/token?tenant=acme", nil)
	req.Header.Set("X-Token-Request", "true")
	req.Header.Set("X-Padding", strings.Repeat("a", 64<<10))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
	if n := f.ts.TotalCalls(); n != 0 {
		t.Fatalf("%d Tenant Service calls for a refused request", n)
	}
}

// A body on GET /token is refused before any upstream call.
func TestRequestBodyIsRefused(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	s := startSidecar(t, f.env())
	req, _ := http.NewRequest("GET", s.tokenURL+"/token?tenant=acme", strings.NewReader(`{"tenant":"other"}`))
	req.Header.Set("X-Token-Request", "true")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || f.ts.TotalCalls() != 0 {
		t.Fatalf("status %d, %d upstream calls; want 400 and none", resp.StatusCode, f.ts.TotalCalls())
	}
}
