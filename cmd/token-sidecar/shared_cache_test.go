package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
)

func TestSharedCacheConfigurationErrors(t *testing.T) {
	dir := t.TempDir()
	badKeys := filepath.Join(dir, "bad-keys")
	if err := os.WriteFile(badKeys, []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const url = "redis://:hunter2@127.0.0.1:6379"
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"url without key file": {[]string{"-demo", "-shared-cache-url", url}, "-shared-cache-key-file / SIDECAR_SHARED_CACHE_KEY_FILE is required"},
		"not a redis url":      {[]string{"-demo", "-shared-cache-url", "http://u:hunter2@h:1", "-shared-cache-key-file", badKeys}, "want a redis:// or rediss:// URL"},
		"missing key file":     {[]string{"-demo", "-shared-cache-url", url, "-shared-cache-key-file", filepath.Join(dir, "none")}, "no such file"},
		"bad key file":         {[]string{"-demo", "-shared-cache-url", url, "-shared-cache-key-file", badKeys}, "line 1: a key must be 32 bytes"},
		"lease too short":      {[]string{"-demo", "-shared-cache-url", url, "-shared-cache-key-file", badKeys, "-shared-cache-lease", "100ms"}, "-shared-cache-lease"},
	} {
		t.Run(name, func(t *testing.T) {
			var stderr syncBuffer
			err := run(context.Background(), tc.args, func(string) string { return "" }, io.Discard, &stderr)
			if err == nil {
				t.Fatal("run accepted the configuration")
			}
			if !strings.Contains(stderr.String(), tc.want) || !strings.Contains(stderr.String(), `"level":"ERROR"`) {
				t.Fatalf("stderr does not say %q in a JSON error line:\n%s", tc.want, stderr.String())
			}
			if strings.Contains(stderr.String(), "hunter2") {
				t.Fatal("the shared cache's password was logged")
			}
		})
	}
}

func TestSharedCacheURLFromTheEnvironment(t *testing.T) {
	env := map[string]string{"SIDECAR_SHARED_CACHE_URL": "rediss://cache:6380/2", "SIDECAR_SHARED_CACHE_KEY_FILE": "/keys", "SIDECAR_DEMO": "true"}
	cfg, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SharedCacheURL != env["SIDECAR_SHARED_CACHE_URL"] || cfg.SharedCacheKeyFile != "/keys" ||
		cfg.SharedCacheTimeout.String() != "200ms" || cfg.SharedCachePrefix != "token-sidecar:" {
		t.Fatalf("cfg = %+v", cfg)
	}
}

func TestDashboardSharedCacheMetricsExist(t *testing.T) {
	names := metricNames(dashboardQueriesWith(t, "token_sidecar_shared_cache_"))
	if len(names) < 5 {
		t.Fatalf("the dashboard queries only %d shared-cache metrics: %v", len(names), names)
	}

	srv := redistest.Start(t)
	f := newFakes(t)
	for _, tenant := range []string{"acme", "other", "during-outage"} {
		f.addTenant(tenant)
	}
	env := f.env()
	env["SIDECAR_SHARED_CACHE_URL"] = srv.URL()
	env["SIDECAR_SHARED_CACHE_KEY_FILE"] = writeSharedCacheKeyFile(t)
	a, b := startSidecar(t, env), startSidecar(t, env)
	defer a.stop(t)
	defer b.stop(t)
	for _, step := range []struct {
		s      *sidecar
		tenant string
	}{{a, "acme"}, {b, "acme"}, {b, "other"}} {
		if ans := step.s.token(t, step.tenant); ans.Status != http.StatusOK {
			t.Fatalf("%s: %d %s", step.tenant, ans.Status, ans.Code)
		}
	}
	srv.Kill()
	if ans := b.token(t, "during-outage"); ans.Status != http.StatusOK {
		t.Fatalf("with Redis down: %d %s", ans.Status, ans.Code)
	}
	exposed := servedSeries(t, b)
	for _, n := range names {
		if len(exposed[n]) == 0 && len(exposed[n+"_bucket"]) == 0 {
			t.Errorf("the dashboard queries %s, which /metrics does not have", n)
		}
	}
}

func writeSharedCacheKeyFile(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "shared-cache-keys")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSharedCacheDownAtStartIsReadyAndServes(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	env := f.env()
	env["SIDECAR_SHARED_CACHE_URL"] = "redis://:the-password@127.0.0.1:1" // nothing listens there
	env["SIDECAR_SHARED_CACHE_KEY_FILE"] = writeSharedCacheKeyFile(t)
	s := startSidecar(t, env)
	defer s.stop(t)
	resp, err := client.Get(s.adminURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz = %d with the shared cache down, want 200", resp.StatusCode)
	}
	for range 3 {
		if a := s.token(t, "acme"); a.Status != http.StatusOK {
			t.Fatalf("token with the shared cache down: %d %s", a.Status, a.Code)
		}
	}
	logs := s.stderr.String()
	if !strings.Contains(logs, `"shared_cache_server":"127.0.0.1:1"`) || strings.Contains(logs, "the-password") {
		t.Fatalf("the log must name the server and never its password:\n%s", logs)
	}
}
