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
