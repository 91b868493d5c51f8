package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
