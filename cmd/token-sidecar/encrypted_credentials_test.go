package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/token-sidecar/token-sidecar/internal/testkit"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// addSealedTenant gives tenant credentials whose secret the fake Tenant
// Service seals for key; the login fake knows only the plaintext.
func (f *fakes) addSealedTenant(tenant string, key *upstreamtest.EncryptionKey) (clientID, secret string) {
	clientID = f.addTenant(tenant)
	c, _ := f.ts.CredentialsOf(tenant)
	f.ts.EncryptFor(tenant, key)
	return clientID, c.ClientSecret
}

// TestEncryptedCredentialsEndToEnd: a Tenant Service that hands out JWEs
// of each algorithm and a login that accepts only the plaintext secrets →
// tokens; a tampered JWE → 502 with one Tenant Service call and no
// exchange, and no caching; nothing the process wrote or exported holds a
// plaintext secret.
func TestEncryptedCredentialsEndToEnd(t *testing.T) {
	f := newFakes(t)
	keys := []*upstreamtest.EncryptionKey{
		upstreamtest.MustEncryptionKey("k-dir", upstreamtest.AlgDir),
		upstreamtest.MustEncryptionKey("k-rsa", upstreamtest.AlgRSAOAEP256),
		upstreamtest.MustEncryptionKey("k-ec", upstreamtest.AlgECDHESA256KW),
	}
	var secrets []string
	for _, k := range keys {
		id, secret := f.addSealedTenant("t-"+k.KID, k)
		secrets = append(secrets, id, secret)
	}
	f.ts.SetStaticToken("wa", "whatsapp", "wa-static-t0ken-secret", time.Time{})
	f.ts.EncryptFor("wa", keys[2])
	badID := f.addTenant("bad")
	badSecret, _ := f.ts.CredentialsOf("bad")
	tampered := testkit.TamperJWE(keys[0].MustEncrypt(badSecret.ClientSecret), 3)
	f.ts.SetBody("bad", "genesys", 200, []byte(`{"clientId":"`+badID+`","clientSecret":"`+tampered+`","region":"eu-west-1"}`), "")
	secrets = append(secrets, badID, badSecret.ClientSecret, "wa-static-t0ken-secret")

	env := f.env()
	env["SIDECAR_CREDENTIAL_KEYS_FILE"] = testkit.InstallKeyFile(t, t.TempDir(), "jwks.json", upstreamtest.JWKSet(keys...))
	env["SIDECAR_REQUIRE_ENCRYPTED_CREDENTIALS"] = "true"
	rec := &recorders{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	s := startSidecarWith(t, env, rec.options())

	for _, k := range keys {
		a := s.token(t, "t-"+k.KID)
		if a.Status != http.StatusOK || a.AccessToken == "" {
			t.Errorf("%s: %d %s %s", k.KID, a.Status, a.Code, a.Message)
		}
	}
	if a := s.whatsapp(t, "wa"); a.Status != http.StatusOK || a.AccessToken != "wa-static-t0ken-secret" {
		t.Errorf("whatsapp: %d %s %s", a.Status, a.Code, a.Message)
	}

	loginCalls := f.login.TotalCalls()
	for i := 1; i <= 2; i++ {
		a := s.token(t, "bad")
		if a.Status != http.StatusBadGateway || a.Code != "UPSTREAM_INVALID_RESPONSE" {
			t.Fatalf("tampered: %d %s %s", a.Status, a.Code, a.Message)
		}
		if !strings.Contains(a.Message, `kid "k-dir"`) || !strings.Contains(a.Message, "decrypt_failed") {
			t.Errorf("message %q does not name the kid and the reason", a.Message)
		}
		if n := f.ts.Calls("bad", "genesys"); n != i {
			t.Errorf("request %d: %d Tenant Service calls, want %d (no retry, no caching)", i, n, i)
		}
	}
	if n := f.login.TotalCalls(); n != loginCalls {
		t.Errorf("the tampered JWE reached the login: %d exchanges", n-loginCalls)
	}

	m := rec.metrics(t, attribute.Key("outcome"), attribute.Key("kid"))
	for name, want := range map[string]float64{
		"token_sidecar.credential.decryptions{outcome=ok}":             4,
		"token_sidecar.credential.decryptions{outcome=decrypt_failed}": 2,
		"token_sidecar.credential.keys{kid=k-dir}":                     1,
		"token_sidecar.credential.keys{kid=k-ec}":                      1,
		"token_sidecar.credential.keys{kid=k-rsa}":                     1,
	} {
		if m[name] != want {
			t.Errorf("%s = %v, want %v", name, m[name], want)
		}
	}
	if !strings.Contains(s.stderr.String(), `"msg":"credential keys loaded"`) || !strings.Contains(s.stderr.String(), `"kids":["k-dir","k-ec","k-rsa"]`) {
		t.Errorf("no log line with the loaded kids:\n%s", s.stderr)
	}

	// The secrets scan: stderr, stdout, /metrics and every span.
	metricsText := fetchMetrics(t, s)
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
	everything := map[string]string{
		"stderr": s.stderr.String(), "stdout": s.stdout.String(),
		"metrics": metricsText, "spans": testkit.SpansText(rec.spans.Ended()),
	}
	for where, text := range everything {
		for _, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds a secret (%.6s…)", where, secret)
			}
		}
		for _, part := range strings.Split(tampered, ".") {
			if len(part) >= 8 && strings.Contains(text, part) {
				t.Errorf("%s holds part of a JWE", where)
			}
		}
	}
	if !strings.Contains(everything["spans"], "token_sidecar.credential.kid") {
		t.Error("no span names the kid")
	}
}

// TestCredentialKeysFileSwappedWhileRunning: the Secret gains a new key
// (the old kid still opens), then is swapped to a bad file (logged, the
// keys stay), all while the sidecar runs.
func TestCredentialKeysFileSwappedWhileRunning(t *testing.T) {
	f := newFakes(t)
	oldKey := upstreamtest.MustEncryptionKey("2026-11", upstreamtest.AlgECDHESA256KW)
	newKey := upstreamtest.MustEncryptionKey("2026-12", upstreamtest.AlgECDHESA256KW)
	f.addSealedTenant("old-1", oldKey)
	f.addSealedTenant("old-2", oldKey)
	f.addSealedTenant("new-1", newKey)
	f.addSealedTenant("new-2", newKey)
	dir := t.TempDir()
	env := f.env()
	env["SIDECAR_CREDENTIAL_KEYS_FILE"] = testkit.InstallKeyFile(t, dir, "jwks.json", upstreamtest.JWKSet(oldKey))
	rec := &recorders{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	s := startSidecarWith(t, env, rec.options(), "-credential-keys-poll-interval", "100ms")

	if a := s.token(t, "old-1"); a.Status != http.StatusOK {
		t.Fatalf("old key: %d %s", a.Status, a.Message)
	}
	if a := s.token(t, "new-1"); a.Status != http.StatusBadGateway || !strings.Contains(a.Message, `kid "2026-12"`) || !strings.Contains(a.Message, "unknown_kid") {
		t.Fatalf("new key before the swap: %d %s", a.Status, a.Message)
	}

	testkit.InstallKeyFile(t, dir, "jwks.json", upstreamtest.JWKSet(oldKey, newKey))
	waitForLog(t, s, `"msg":"credential keys reloaded"`)
	if !strings.Contains(s.stderr.String(), `"kids":["2026-11","2026-12"]`) {
		t.Errorf("reload line without the kids:\n%s", s.stderr)
	}
	for _, tenant := range []string{"new-1", "old-2"} {
		if a := s.token(t, tenant); a.Status != http.StatusOK {
			t.Errorf("%s after the swap: %d %s", tenant, a.Status, a.Message)
		}
	}

	testkit.InstallKeyFile(t, dir, "jwks.json", []byte(`{"keys":[{"kty":"oct","kid":"short","k":"c2hvcnQ"}]}`))
	waitForLog(t, s, `"msg":"credential keys file not reloaded; the previous keys stay in use"`)
	if !strings.Contains(s.stderr.String(), `key 0 (kid \"short\"): \"oct\" key is 5 bytes`) {
		t.Errorf("the reload error does not name the problem:\n%s", s.stderr)
	}
	if a := s.token(t, "new-2"); a.Status != http.StatusOK {
		t.Errorf("after a bad file: %d %s; want the previous keys in use", a.Status, a.Message)
	}
	m := rec.metrics(t, attribute.Key("outcome"), attribute.Key("kid"))
	for name, want := range map[string]float64{
		"token_sidecar.credential.keys.reloads{outcome=ok}":    1,
		"token_sidecar.credential.keys.reloads{outcome=error}": 1,
		"token_sidecar.credential.keys{kid=2026-11}":           1,
		"token_sidecar.credential.keys{kid=2026-12}":           1,
	} {
		if m[name] != want {
			t.Errorf("%s = %v, want %v", name, m[name], want)
		}
	}
}

func waitForLog(t *testing.T, s *sidecar, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(s.stderr.String(), want) {
			return
		}
	}
	t.Fatalf("no log line %s:\n%s", want, s.stderr)
}

// TestBadCredentialKeysFileStopsTheStart: through run, and through the
// binary for the exit code, a key file that cannot be used stops the
// sidecar with one JSON line naming the problem.
func TestBadCredentialKeysFileStopsTheStart(t *testing.T) {
	f := newFakes(t)
	dir := t.TempDir()
	rsaKey := upstreamtest.MustEncryptionKey("pub", upstreamtest.AlgRSAOAEP256)
	pub, _ := rsaKey.PublicJWK().MarshalJSON()
	files := map[string]struct{ data, want string }{
		"missing":    {"", "no such file"},
		"not JSON":   {"{keys", "not a JSON JWK Set: syntax error at byte 2"},
		"public key": {`{"keys":[` + string(pub) + `]}`, `key 0 (kid \"pub\"): is a public key`},
		"empty set":  {`{"keys":[]}`, "JWK Set has no keys"},
	}
	for name, c := range files {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
			if c.data != "" {
				os.WriteFile(path, []byte(c.data), 0o600)
			}
			env := f.env()
			env["SIDECAR_CREDENTIAL_KEYS_FILE"] = path
			var stderr syncBuffer
			err := run(context.Background(), []string{"-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0"},
				func(k string) string { return env[k] }, &syncBuffer{}, &stderr)
			if err == nil {
				t.Fatal("run started with a bad key file")
			}
			lines := logLines(t, stderr.String())
			if len(lines) == 0 {
				t.Fatalf("no JSON log line: %s", stderr.String())
			}
			if !strings.Contains(stderr.String(), c.want) || !strings.Contains(stderr.String(), "-credential-keys-file") {
				t.Errorf("log does not name the problem (%s):\n%s", c.want, stderr.String())
			}
		})
	}
	t.Run("binary exits 1", func(t *testing.T) {
		bin := buildBinary(t)
		cmd := exec.Command(bin, "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0")
		cmd.Env = append(os.Environ(), "SIDECAR_TENANT_SERVICE_URL="+f.ts.URL(), "SIDECAR_CREDENTIAL_KEYS_FILE="+filepath.Join(dir, "none.json"))
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
			t.Fatalf("exit %v, want 1:\n%s", err, out)
		}
		if !strings.Contains(string(out), `"level":"ERROR"`) || !strings.Contains(string(out), "none.json") {
			t.Errorf("no JSON error line naming the file:\n%s", out)
		}
	})
	t.Run("require without a file", func(t *testing.T) {
		_, err := parseConfig([]string{"-require-encrypted-credentials"}, func(k string) string { return f.env()[k] }, &syncBuffer{})
		if err == nil || !strings.Contains(err.Error(), "-credential-keys-file") {
			t.Errorf("error %v", err)
		}
	})
}

// TestDemoServesAnEncryptedTenant: -demo seals one tenant's secret for an
// in-memory key, and the sidecar opens it.
func TestDemoServesAnEncryptedTenant(t *testing.T) {
	rec := &recorders{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	s := startSidecarWith(t, nil, rec.options(), "-demo")
	if a := s.token(t, upstreamtest.DemoEncryptedTenant); a.Status != http.StatusOK || a.AccessToken == "" {
		t.Fatalf("demo encrypted tenant: %d %s %s", a.Status, a.Code, a.Message)
	}
	if !strings.Contains(s.stdout.String(), "tenant="+upstreamtest.DemoEncryptedTenant) {
		t.Errorf("demo help does not show the encrypted tenant:\n%s", s.stdout)
	}
	if m := rec.metrics(t, attribute.Key("outcome")); m["token_sidecar.credential.decryptions{outcome=ok}"] != 1 {
		t.Errorf("decryptions %v", m)
	}
}

// TestBinaryOpensEncryptedCredentials is the end-to-end case through the
// built binary: a sealed secret → a token, a tampered one → 502 with one
// Tenant Service call and no exchange, and neither plaintext on stderr or
// /metrics.
func TestBinaryOpensEncryptedCredentials(t *testing.T) {
	f := newFakes(t)
	key := upstreamtest.MustEncryptionKey("k-bin", upstreamtest.AlgECDHESA256KW)
	_, secret := f.addSealedTenant("acme", key)
	badID := f.addTenant("bad")
	bad, _ := f.ts.CredentialsOf("bad")
	f.ts.SetBody("bad", "genesys", 200, []byte(`{"clientId":"`+badID+`","clientSecret":"`+testkit.TamperJWE(key.MustEncrypt(bad.ClientSecret), 3)+`","region":"eu-west-1"}`), "")
	path := testkit.InstallKeyFile(t, t.TempDir(), "jwks.json", upstreamtest.JWKSet(key))
	_, addr, stdout, stderr := startBinary(t, []string{
		"SIDECAR_TENANT_SERVICE_URL=" + f.ts.URL(), "SIDECAR_GENESYS_LOGIN_URL=" + f.login.URL(),
		"SIDECAR_CREDENTIAL_KEYS_FILE=" + path, "SIDECAR_REQUIRE_ENCRYPTED_CREDENTIALS=true",
	}, "-admin-listen", "127.0.0.1:0")
	if a := do(t, "GET", "http://"+addr+"/token?tenant=acme", nil); a.Status != http.StatusOK || a.AccessToken == "" {
		t.Fatalf("sealed secret: %d %s %s", a.Status, a.Code, a.Message)
	}
	exchanges := f.login.TotalCalls()
	if a := do(t, "GET", "http://"+addr+"/token?tenant=bad", nil); a.Status != http.StatusBadGateway || a.Code != "UPSTREAM_INVALID_RESPONSE" || !strings.Contains(a.Message, `kid "k-bin"`) {
		t.Fatalf("tampered: %d %s %s", a.Status, a.Code, a.Message)
	}
	if n, m := f.ts.Calls("bad", "genesys"), f.login.TotalCalls()-exchanges; n != 1 || m != 0 {
		t.Errorf("tampered: %d Tenant Service calls and %d exchanges, want 1 and 0", n, m)
	}
	if !strings.Contains(stderr.String(), `"kids":["k-bin"]`) {
		t.Errorf("no log line with the loaded kid:\n%s", stderr)
	}
	m := regexp.MustCompile(`"admin_addr":"([^"]+)"`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no admin address logged:\n%s", stderr)
	}
	resp, err := client.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metricsText), `token_sidecar_credential_keys{kid="k-bin"`) {
		t.Error("/metrics does not show the loaded kid")
	}
	for where, text := range map[string]string{"stderr": stderr.String(), "stdout": stdout.String(), "metrics": string(metricsText)} {
		for _, s := range []string{secret, bad.ClientSecret} {
			if strings.Contains(text, s) {
				t.Errorf("%s holds a plaintext secret", where)
			}
		}
	}
}
