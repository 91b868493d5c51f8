package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/token-sidecar/token-sidecar/upstream"
)

// TestKeygenThenSealOpensInTheSidecar: the README's worked example, for
// each algorithm — the private set parses as the sidecar's key file, and a
// secret sealed for the public key opens with it.
func TestKeygenThenSealOpensInTheSidecar(t *testing.T) {
	for _, alg := range []string{"ECDH-ES+A256KW", "RSA-OAEP-256", "dir"} {
		t.Run(alg, func(t *testing.T) {
			dir := t.TempDir()
			priv, pub := filepath.Join(dir, "jwks.json"), filepath.Join(dir, "public.jwk")
			if err := run([]string{"keygen", "-alg", alg, "-kid", "2026-12", "-private", priv, "-public", pub}, nil, nil); err != nil {
				t.Fatal(err)
			}
			if st, _ := os.Stat(priv); st.Mode().Perm() != 0o600 {
				t.Errorf("private set mode %v", st.Mode().Perm())
			}
			var out bytes.Buffer
			if err := run([]string{"seal", "-key", pub}, strings.NewReader("s3cr3t"), &out); err != nil {
				t.Fatal(err)
			}
			f, err := upstream.LoadCredentialKeyFile(priv)
			if err != nil {
				t.Fatal(err)
			}
			body := `{"clientId":"id","clientSecret":"` + strings.TrimSpace(out.String()) + `","region":"eu-west-1"}`
			secret, err := openWith(t, f, body)
			if err != nil || secret != "s3cr3t" {
				t.Errorf("opened %q, %v", secret, err)
			}
		})
	}
	if err := run([]string{"keygen"}, nil, nil); err == nil {
		t.Error("keygen without -kid")
	}
}

// openWith runs the body through a Tenant Service client with f's keys.
func openWith(t *testing.T, f *upstream.CredentialKeyFile, body string) (string, error) {
	t.Helper()
	srv := newBodyServer(t, body)
	c, err := upstream.NewTenantClient(upstream.TenantClientConfig{
		BaseURL:    srv,
		Decryption: upstream.CredentialDecryption{Keys: f.Keys, RequireEncrypted: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := c.GenesysCredentials(context.Background(), "acme")
	if err != nil {
		return "", err
	}
	defer creds.Wipe()
	return string(creds.ClientSecret), nil
}
