package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

func TestShortTokenIsNeverServedExpiredAndIsReplaced(t *testing.T) {
	f := newFakes(t)
	id := f.addTenant("acme")
	f.login.SetExpiresIn(id, 4)
	s := startSidecar(t, f.env())

	firstSeen := map[string]time.Time{}
	end := time.Now().Add(6 * time.Second)
	for time.Now().Before(end) {
		a := s.token(t, "acme")
		now := time.Now()
		if a.Status != 200 {
			t.Fatalf("status %d %s", a.Status, a.Code)
		}
		seen, ok := firstSeen[a.AccessToken]
		if !ok {
			firstSeen[a.AccessToken], seen = now, now
		}
		// The token was issued no later than first seen; 4 s minus the
		// 0.4 s margin is the most it may be served for.
		if age := now.Sub(seen); age > 3600*time.Millisecond {
			t.Fatalf("token served %v after it was first seen (lifetime 4 s, margin 0.4 s)", age)
		}
		if a.ExpiresIn < 1 || a.ExpiresIn > 4 {
			t.Fatalf("expires_in = %d for a 4 s token", a.ExpiresIn)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(firstSeen) < 2 {
		t.Fatalf("the 4 s token was never replaced in 6 s (%d tokens seen)", len(firstSeen))
	}
}

func TestTenantServiceDownServesTokenUntilMarginThen503(t *testing.T) {
	f := newFakes(t)
	id := f.addTenant("acme")
	f.login.SetExpiresIn(id, 4) // refresh from ~3.0 s, margin from 3.6 s
	s := startSidecar(t, f.env())
	start := time.Now()
	first := s.token(t, "acme")
	if first.Status != 200 {
		t.Fatalf("status %d", first.Status)
	}
	f.ts.SetBody("acme", "genesys", http.StatusServiceUnavailable, []byte(`{"error":"down"}`), "application/json")

	// Past the refresh point but outside the margin: the old token is served
	// while refreshes fail.
	time.Sleep(time.Until(start.Add(3250 * time.Millisecond)))
	for time.Since(start) < 3450*time.Millisecond {
		if a := s.token(t, "acme"); a.Status != 200 || a.AccessToken != first.AccessToken {
			t.Fatalf("at %v: status %d, same token %v; want the old token", time.Since(start), a.Status, a.AccessToken == first.AccessToken)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f.ts.Calls("acme", "genesys") < 2 {
		t.Fatal("no refresh was attempted past the refresh point")
	}
	// Inside the margin: the request waits for a fetch, which fails.
	time.Sleep(time.Until(start.Add(3700 * time.Millisecond)))
	a := s.token(t, "acme")
	if a.Status != 503 || a.Code != "TENANT_SERVICE_UNAVAILABLE" {
		t.Fatalf("inside the margin: status %d code %q; want 503 TENANT_SERVICE_UNAVAILABLE", a.Status, a.Code)
	}
}

func TestShutdownFinishesInFlightMiss(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	f.ts.Script("acme", "genesys", upstreamtest.Step{Delay: time.Second})
	s := startSidecar(t, f.env())

	got := make(chan tokenAnswer, 1)
	go func() { got <- s.token(t, "acme") }()
	for f.ts.TotalCalls() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.stop(t) }()

	// Readiness turns 503 while in-flight requests finish.
	deadline := time.Now().Add(time.Second)
	for {
		resp, err := http.Get(s.adminURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("readiness did not turn 503 during shutdown (err %v)", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if a := <-got; a.Status != 200 || a.AccessToken == "" {
		t.Fatalf("in-flight request: status %d code %q; want 200", a.Status, a.Code)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("run returned %v after shutdown, want nil", err)
	}
}

func TestAdminEndpoints(t *testing.T) {
	s := startSidecar(t, nil, "-demo")
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/token": 404} {
		resp, err := http.Get(s.adminURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("admin %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestConfigurationErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		want string
	}{
		"no tenant service":       {nil, nil, "SIDECAR_TENANT_SERVICE_URL is required"},
		"bad url":                 {[]string{"-tenant-service-url", "ftp://x"}, nil, "not an absolute http(s) URL"},
		"bad env duration":        {[]string{"-demo"}, map[string]string{"SIDECAR_REQUEST_TIMEOUT": "soon"}, "SIDECAR_REQUEST_TIMEOUT"},
		"bad default tenant":      {[]string{"-demo", "-default-tenant", "../x"}, nil, "-default-tenant"},
		"bad allowed tenant":      {[]string{"-demo", "-allowed-tenants", "ok,not ok"}, nil, "-allowed-tenants"},
		"capacity":                {[]string{"-demo", "-cache-capacity", "0"}, nil, "-cache-capacity"},
		"same listeners":          {[]string{"-demo", "-listen", "127.0.0.1:1", "-admin-listen", "127.0.0.1:1"}, nil, "must differ"},
		"refresh-at":              {[]string{"-demo", "-refresh-at", "1.5"}, nil, "-refresh-at"},
		"proxy-timeout":           {[]string{"-demo", "-proxy-timeout", "0s"}, nil, "-proxy-timeout"},
		"idle-timeout":            {[]string{"-demo", "-idle-timeout", "0s"}, nil, "-idle-timeout"},
		"admin-max-connections":   {[]string{"-demo", "-admin-max-connections", "-1"}, nil, "-admin-max-connections"},
		"proxy-retry-buffer":      {[]string{"-demo"}, map[string]string{"SIDECAR_PROXY_RETRY_BUFFER": "32MB"}, "SIDECAR_PROXY_RETRY_BUFFER"},
		"url with a password":     {[]string{"-tenant-service-url", "http://u:hunter2@ts"}, nil, "user:password"},
		"bad url with a password": {[]string{"-tenant-service-url", "//svc:hunter2@tenant:8080"}, nil, "user:password"},
		"ftp url with a password": {[]string{"-demo", "-genesys-login-url", "ftp://u:hunter2@login"}, nil, "user:password"},
	} {
		t.Run(name, func(t *testing.T) {
			var stderr syncBuffer
			getenv := func(k string) string { return tc.env[k] }
			err := run(context.Background(), tc.args, getenv, io.Discard, &stderr)
			if err == nil {
				t.Fatal("run accepted the configuration")
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr does not say %q:\n%s", tc.want, stderr.String())
			}
			if strings.Contains(stderr.String(), "hunter2") {
				t.Fatal("a password from a URL was logged")
			}
		})
	}
}

func TestFlagWinsOverEnvironment(t *testing.T) {
	getenv := func(k string) string {
		return map[string]string{"SIDECAR_DEFAULT_TENANT": "from-env", "SIDECAR_CACHE_CAPACITY": "42", "SIDECAR_DEMO": "true"}[k]
	}
	cfg, err := parseConfig([]string{"-default-tenant", "from-flag"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DefaultTenant != "from-flag" || cfg.CacheCapacity != 42 || !cfg.Demo {
		t.Fatalf("cfg = tenant %q capacity %d demo %v", cfg.DefaultTenant, cfg.CacheCapacity, cfg.Demo)
	}
	if cfg.ProxyTimeout != 10*time.Minute {
		t.Fatalf("-proxy-timeout default = %v, want 10m", cfg.ProxyTimeout)
	}
}

// The tests below run the real binary, as a user would.

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "token-sidecar-bin")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "token-sidecar")
		out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return binary
}

// TestMain removes the built binary and fails the package if a stopped
// sidecar left goroutines behind (listeners, cache janitor, fetches).
func TestMain(m *testing.M) {
	code := m.Run()
	if binary != "" {
		os.RemoveAll(filepath.Dir(binary))
	}
	if code == 0 {
		// The test clients' idle keep-alive connections are not the sidecar's.
		client.CloseIdleConnections()
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startBinary starts the binary and waits for its "started" log line, from
// which it reads the token listener's address.
func startBinary(t *testing.T, env []string, args ...string) (cmd *exec.Cmd, tokenAddr string, stdout *syncBuffer, stderr *syncBuffer) {
	t.Helper()
	bin := buildBinary(t)
	cmd = exec.Command(bin, append([]string{"-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	cmd.Stdout = stdout
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		pw.Close() // ends the scanner goroutine below
	})
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`"token_addr":"([^"]+)"`)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			stderr.Write(append(sc.Bytes(), '\n'))
			if m := re.FindSubmatch(sc.Bytes()); m != nil {
				addr <- string(m[1])
			}
		}
	}()
	select {
	case tokenAddr = <-addr:
	case <-time.After(20 * time.Second):
		t.Fatalf("binary did not start:\n%s", stderr)
	}
	return cmd, tokenAddr, stdout, stderr
}

func TestBinarySIGTERMDuringInFlightMiss(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	f.ts.Script("acme", "genesys", upstreamtest.Step{Delay: time.Second})
	cmd, addr, _, stderr := startBinary(t, []string{"SIDECAR_TENANT_SERVICE_URL=" + f.ts.URL(), "SIDECAR_GENESYS_LOGIN_URL=" + f.login.URL()})

	got := make(chan tokenAnswer, 1)
	go func() { got <- do(t, "GET", "http://"+addr+"/token?tenant=acme", nil) }()
	for f.ts.TotalCalls() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if a := <-got; a.Status != 200 || a.AccessToken == "" {
		t.Fatalf("in-flight request: status %d %q; want 200", a.Status, a.Code)
	}
	err := cmd.Wait()
	if err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

func TestBinaryDemoPrintsAWorkingCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	_, _, stdout, stderr := startBinary(t, nil, "-demo")
	var line string
	for deadline := time.Now().Add(5 * time.Second); line == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, l := range strings.Split(stdout.String(), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "curl ") && strings.Contains(l, "/token?") && !strings.Contains(l, "POST") {
				line = strings.TrimSpace(l)
			}
		}
	}
	if line == "" {
		t.Fatalf("no curl line printed:\n%s\n%s", stdout, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", "-c", line).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	if !regexp.MustCompile(`"access_token":"[^"]+"`).Match(out) {
		t.Fatalf("%s answered %s", line, out)
	}
}
