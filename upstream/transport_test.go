package upstream

import (
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDefaultTransportHonoursProxyEnvironment checks that a client built
// without HTTPClient routes through HTTPS_PROXY / HTTP_PROXY and respects
// NO_PROXY. It runs in a child process because net/http reads the proxy
// variables once per process; it asks the transport's Proxy function and so
// never opens a connection.
func TestDefaultTransportHonoursProxyEnvironment(t *testing.T) {
	if os.Getenv("UPSTREAM_PROXY_CHILD") == "1" {
		tc, err := NewTenantClient(TenantClientConfig{BaseURL: "http://tenant-service.internal"})
		if err != nil {
			t.Fatal(err)
		}
		lc, err := NewLoginClient(LoginClientConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*http.Client{tc.call.client, lc.call.client} {
			rt, _ := c.Transport.(redactingTransport)
			tr, ok := rt.base.(*http.Transport)
			if !ok || tr == http.DefaultTransport {
				t.Fatalf("transport %T is not a private clone of http.DefaultTransport", c.Transport)
			}
			for target, want := range map[string]string{
				"http://tenant-service.internal/x":         "proxy-plain:3128",
				"https://login.mypurecloud.ie/oauth/token": "proxy-tls:3129",
				"https://api.excluded.example/oauth/token": "",
			} {
				req, _ := http.NewRequest(http.MethodGet, target, nil)
				u, err := tr.Proxy(req)
				got := ""
				if u != nil {
					got = u.Host
				}
				if err != nil || got != want {
					t.Errorf("%s: proxy %q (%v), want %q", target, got, err, want)
				}
			}
		}
		return
	}
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(name) {
		case "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "REQUEST_METHOD":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "UPSTREAM_PROXY_CHILD=1",
		"HTTP_PROXY=http://proxy-plain:3128", "HTTPS_PROXY=http://proxy-tls:3129", "NO_PROXY=excluded.example")
	cmd := exec.Command(os.Args[0], "-test.run=^TestDefaultTransportHonoursProxyEnvironment$", "-test.count=1", "-test.v")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestDefaultTransportHonoursProxyEnvironment") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// Concurrent misses reuse keep-alive connections: the default transport
// keeps as many idle connections per host as fetches may run at once.
func TestDefaultTransportKeepsEnoughIdleConnections(t *testing.T) {
	tr, ok := defaultTransport().(*http.Transport)
	if !ok {
		t.Fatalf("default transport is %T", defaultTransport())
	}
	if tr.MaxIdleConnsPerHost < 64 || tr.MaxIdleConns < tr.MaxIdleConnsPerHost {
		t.Fatalf("MaxIdleConnsPerHost %d, MaxIdleConns %d; want at least 64 per host", tr.MaxIdleConnsPerHost, tr.MaxIdleConns)
	}
	if tr.Proxy == nil {
		t.Fatal("the clone lost the proxy-from-environment setting")
	}
}
