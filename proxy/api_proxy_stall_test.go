package proxy

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
)

// A /proxy/ upload that stops sending is cut off once no byte has come for
// APIBodyIdleTimeout, not held for the whole APIProxyTimeout: a stalled
// upload holds a busy connection, which the listener's bound never closes,
// so a few of them would otherwise lock every container out of /token.
func TestAPIProxyStalledUploadIsCutOff(t *testing.T) {
	api := newFakeAPI(t, nil)
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { return apiToken("t", api.srv.URL), nil }}
	base := startProxy(t, fc, func(c *Config) {
		c.DefaultTenant = "acme"
		c.APIProxyTimeout = time.Hour
		c.APIBodyIdleTimeout = 300 * time.Millisecond
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers, then 1 byte of an announced 100: the rest never comes.
	if _, err := conn.Write([]byte("POST /proxy/api/v2/x HTTP/1.1\r\nHost: sidecar\r\nX-Token-Request: true\r\n" +
		"Content-Length: 100\r\n\r\nx")); err != nil {
		t.Fatal(err)
	}
	// Far below APIProxyTimeout, far above the idle timeout.
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		// A closed connection is also "cut off"; a read deadline is not.
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the stalled upload was still held open after 20 s")
		}
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 400 for a body that stopped arriving", resp.StatusCode)
	}
	if n := len(api.requests()); n != 0 {
		t.Errorf("the API was called %d times for a body that never arrived", n)
	}
}
