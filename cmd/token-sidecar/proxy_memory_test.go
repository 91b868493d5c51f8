package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rssMiB is the resident set of process pid, from /proc (Linux).
func rssMiB(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// Requests that announce a 1 MiB body and send one byte cost the process a
// little memory each, not the MiB they announce: buffers grow as bytes
// arrive.
func TestBinaryHalfSentProxyBodiesDoNotReserveMemory(t *testing.T) {
	const bodies = 100
	cmd, addr, _, stderr := startBinary(t, nil, "-demo")
	if resp, body := proxied(t, http.MethodGet, "http://"+addr+"/proxy/warm-up", nil, http.Header{"X-Tenant-Id": {"demo-tenant"}}); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %s\n%s", resp.StatusCode, body, stderr)
	}
	idle := rssMiB(t, cmd.Process.Pid)
	for range bodies {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /proxy/api/v2/uploads HTTP/1.1\r\nHost: sidecar\r\nX-Token-Request: true\r\n"+
			"X-Tenant-ID: demo-tenant\r\nContent-Length: %d\r\n\r\nx", 1<<20)
	}
	// The sidecar reads the requests in its own time: take the largest of a
	// few readings. Buffering the announced sizes would add 100 MiB.
	peak := idle
	for range 8 {
		time.Sleep(250 * time.Millisecond)
		peak = max(peak, rssMiB(t, cmd.Process.Pid))
	}
	if peak-idle > 32 {
		t.Fatalf("RSS went from %.1f to %.1f MiB with %d half-sent 1 MiB bodies; want under 32 MiB more", idle, peak, bodies)
	}
	if a := do(t, "GET", "http://"+addr+"/token?tenant=demo-tenant", nil); a.Status != 200 {
		t.Fatalf("/token meanwhile: %d %s", a.Status, a.Code)
	}
}

// -proxy-retry-buffer bounds the bodies kept for a 401 retry: one past it is
// sent whole, once, and its 401 goes back; one within it is retried. (The
// retried one goes first: the second forced refresh is within
// -min-refresh-interval, and would give back the refused token.)
func TestAPIProxyRetryBufferFlag(t *testing.T) {
	f := newFakes(t)
	acme := f.addTenant("acme")
	api := newGenesysAPI(t, f.login)
	s := startSidecar(t, proxyEnv(f, api), "-proxy-retry-buffer", "8KiB")
	acmeH := http.Header{"X-Tenant-Id": {"acme"}}
	proxied(t, http.MethodGet, s.tokenURL+"/proxy/warm-up", nil, acmeH)
	api.refuse(acme)
	for _, tc := range []struct {
		size     int
		attempts int
	}{{2 << 10, 2}, {16 << 10, 1}} {
		body := bytes.Repeat([]byte("b"), tc.size)
		before := len(api.requests())
		resp, _ := proxied(t, http.MethodPost, s.tokenURL+"/proxy/api/v2/uploads", bytes.NewReader(body), acmeH)
		reqs := api.requests()[before:]
		if resp.StatusCode != http.StatusUnauthorized || len(reqs) != tc.attempts {
			t.Fatalf("%d-byte body: status %d after %d attempts; want the 401 after %d", tc.size, resp.StatusCode, len(reqs), tc.attempts)
		}
		for _, r := range reqs {
			if r.BodySHA != sha(body) {
				t.Fatalf("%d-byte body: the API got %d bytes", tc.size, r.BodyLen)
			}
		}
	}
	metrics := fetchMetrics(t, s)
	if n := metricValue(t, metrics, "token_sidecar_proxy_retry_buffer_limit_bytes", "otel_scope_name"); n != 8<<10 {
		t.Errorf("token_sidecar_proxy_retry_buffer_limit_bytes = %v, want 8192", n)
	}
	if n := metricValue(t, metrics, "token_sidecar_proxy_retry_buffer_used_bytes", "otel_scope_name"); n != 0 {
		t.Errorf("token_sidecar_proxy_retry_buffer_used_bytes = %v with no request in flight, want 0", n)
	}
}
