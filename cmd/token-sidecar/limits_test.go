package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// keptConn is a keep-alive HTTP/1.1 connection the test drives by hand, so
// that it can tell when the server closes it.
type keptConn struct {
	net.Conn
	r *bufio.Reader
}

func dialKept(t *testing.T, baseURL string) *keptConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keptConn{Conn: c, r: bufio.NewReader(c)}
}

// get sends one keep-alive GET and returns its status, or an error if the
// connection failed.
func (c *keptConn) get(path string) (int, error) {
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: sidecar\r\nX-Token-Request: true\r\n\r\n", path); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// closedByServer reports whether the server has closed c: a read sees the
// end of the stream rather than running into the short deadline. Only
// called once whatever closed c has happened-before on the server's side,
// so the FIN is already on loopback.
func (c *keptConn) closedByServer(t *testing.T) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := c.r.ReadByte()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	if err == nil {
		t.Fatal("the server sent bytes on an idle connection")
	}
	return true
}

// freshGet asks for path on a new connection (no keep-alive), as a kubelet
// probe or a new container would, with a deadline generous enough for a
// loaded machine, and returns the status (-1 if it was not served).
func freshGet(t *testing.T, url string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Token-Request", "true")
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

// pollUntil waits, within a generous bound, for cond to hold.
func pollUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
	}
}

// Idle keep-alive connections, and connections that never send a request,
// hold every slot of the token listener: a new client is still served,
// because the connections idle the longest are closed to make room.
func TestIdleConnectionsMakeRoomOnTheTokenListener(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	const limit = 4
	s := startSidecar(t, f.env(), "-max-connections", fmt.Sprint(limit))

	var held []*keptConn
	for range limit {
		c := dialKept(t, s.tokenURL)
		if code, err := c.get("/token?tenant=acme"); err != nil || code != http.StatusOK {
			t.Fatalf("keep-alive request: %d, %v", code, err)
		}
		held = append(held, c)
	}
	for range limit {
		held = append(held, dialKept(t, s.tokenURL)) // silent: never sends a request
	}

	for i := range 3 {
		if code := freshGet(t, s.tokenURL+"/token?tenant=acme"); code != http.StatusOK {
			t.Fatalf("new client %d: status %d with %d idle connections open; want 200", i, code, len(held))
		}
	}
	closed := 0
	for _, c := range held {
		if c.closedByServer(t) {
			closed++
		}
	}
	// 8 idle connections and 3 new clients through 4 slots: at most 4 of
	// the idle ones may still be open.
	if closed < len(held)-limit {
		t.Fatalf("%d of %d idle connections closed; want at least %d", closed, len(held), len(held)-limit)
	}
}

// Connections busy with a request are never closed to make room: with every
// slot busy, a further client waits until one finishes, then is served.
func TestBusyConnectionsHoldFurtherClients(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	s := startSidecar(t, f.env(), "-max-connections", "2")

	// Two tenants, so that the two requests are not collapsed into one fetch.
	busy := make(chan int, 2)
	for _, tenant := range []string{"slow-1", "slow-2"} {
		f.addTenant(tenant)
		f.ts.Script(tenant, "genesys", upstreamtest.Step{Delay: 2 * time.Second})
		go func() { busy <- freshGet(t, s.tokenURL+"/token?tenant="+tenant) }()
	}
	pollUntil(t, func() bool { return f.ts.Calls("slow-1", "genesys") == 1 && f.ts.Calls("slow-2", "genesys") == 1 })

	got := make(chan int, 1)
	go func() { got <- freshGet(t, s.tokenURL+"/token?tenant=acme") }()
	select {
	case code := <-got:
		t.Fatalf("a third client was served (%d) while two requests held every slot", code)
	case <-time.After(300 * time.Millisecond):
	}
	for range 2 {
		if code := <-busy; code != http.StatusOK {
			t.Fatalf("busy request: status %d, want 200", code)
		}
	}
	if code := <-got; code != http.StatusOK {
		t.Fatalf("status %d once a slot was free, want 200", code)
	}
}

// A keep-alive connection left idle is closed after -idle-timeout.
func TestIdleTimeoutClosesKeepAliveConnections(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	s := startSidecar(t, f.env(), "-idle-timeout", "300ms")
	for _, base := range []string{s.tokenURL + "/token?tenant=acme", s.adminURL + "/healthz"} {
		base, path, _ := strings.Cut(strings.TrimPrefix(base, "http://"), "/")
		c := dialKept(t, "http://"+base)
		if code, err := c.get("/" + path); err != nil || code != http.StatusOK {
			t.Fatalf("%s: %d, %v", path, code, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.r.ReadByte(); err != io.EOF {
			t.Fatalf("%s: reading the idle connection: %v; want the server to close it (EOF)", path, err)
		}
	}
}

// A flood of idle connections to the admin listener, which the whole cluster
// can reach, is bounded by -admin-max-connections, and probes and scrapes on
// new connections are still served.
func TestAdminListenerIdleFloodIsBoundedAndProbesGetThrough(t *testing.T) {
	f := newFakes(t)
	const limit = 8
	s := startSidecar(t, f.env(), "-admin-max-connections", fmt.Sprint(limit))

	var held []*keptConn
	for range 2 * limit {
		c := dialKept(t, s.adminURL)
		if code, err := c.get("/healthz"); err != nil || code != http.StatusOK {
			t.Fatalf("keep-alive /healthz: %d, %v", code, err)
		}
		held = append(held, c)
	}
	for range 40 {
		held = append(held, dialKept(t, s.adminURL))
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code := freshGet(t, s.adminURL+path); code != http.StatusOK {
			t.Fatalf("%s: status %d during the flood, want 200", path, code)
		}
	}
	open := 0
	for _, c := range held {
		if !c.closedByServer(t) {
			open++
		}
	}
	if open > limit {
		t.Fatalf("%d of %d flood connections still open; want at most %d", open, len(held), limit)
	}
	metrics := fetchMetrics(t, s)
	if n := metricValue(t, metrics, "token_sidecar_listener_idle_closed_total", `listener="admin"`); n < float64(len(held)-limit) {
		t.Errorf("token_sidecar_listener_idle_closed_total{listener=admin} = %v; want at least %d", n, len(held)-limit)
	}
	if n := metricValue(t, metrics, "token_sidecar_listener_connections", `listener="admin"`); n < 1 || n > limit {
		t.Errorf("token_sidecar_listener_connections{listener=admin} = %v; want 1 to %d", n, limit)
	}
}

// metricValue is the value of the series of name whose labels hold label,
// in Prometheus text.
func metricValue(t *testing.T, text, name, label string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + name + `\{[^}]*` + regexp.QuoteMeta(label) + `[^}]*\} (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("/metrics has no %s{%s}", name, label)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
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
