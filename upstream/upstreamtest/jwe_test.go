package upstreamtest

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// TestEncryptFor: the fake seals a tenant's clientSecret and accessToken
// for the key, afresh every answer, with the key's kid; the key's private
// JWK opens them; nil serves them in plain again.
func TestEncryptFor(t *testing.T) {
	ts := NewTenantService()
	defer ts.Close()
	ts.SetCredentials("acme", Credentials{ClientID: "id", ClientSecret: "s3cr3t", Region: "eu-west-1"})
	ts.SetStaticToken("acme", "whatsapp", "wa-token", time.Time{})
	c := httpClient(t)
	get := func(provider, field string) string {
		req, _ := http.NewRequest(http.MethodGet, ts.URL()+"/tenants/acme/credentials/"+provider, nil)
		a, err := do(t, c, req)
		if err != nil || a.status != 200 {
			t.Fatalf("%s: %d %v", provider, a.status, err)
		}
		v, _ := a.body[field].(string)
		return v
	}
	for _, alg := range []string{AlgDir, AlgRSAOAEP256, AlgECDHESA256KW} {
		key := MustEncryptionKey("k-"+alg, alg)
		ts.EncryptFor("acme", key)
		first := get("genesys", "clientSecret")
		if first == get("genesys", "clientSecret") {
			t.Errorf("%s: the same JWE twice; want a fresh encryption per answer", alg)
		}
		for field, want := range map[string]string{"clientSecret": "s3cr3t", "accessToken": "wa-token"} {
			provider := map[string]string{"clientSecret": "genesys", "accessToken": "whatsapp"}[field]
			v := get(provider, field)
			obj, err := jose.ParseEncryptedCompact(v, []jose.KeyAlgorithm{jose.KeyAlgorithm(alg)}, []jose.ContentEncryption{jose.A256GCM})
			if err != nil {
				t.Fatalf("%s %s: %v", alg, field, err)
			}
			jwk := key.JWK()
			plain, err := obj.Decrypt(jwk.Key)
			if err != nil || string(plain) != want || obj.Header.KeyID != key.KID {
				t.Errorf("%s %s: %q kid %q, %v", alg, field, plain, obj.Header.KeyID, err)
			}
		}
		if set := string(JWKSet(key)); !strings.Contains(set, `"kid":"k-`+alg+`"`) {
			t.Errorf("JWKSet: %s", set)
		}
	}
	ts.EncryptFor("acme", nil)
	if v := get("genesys", "clientSecret"); v != "s3cr3t" {
		t.Errorf("after EncryptFor(nil): %q", v)
	}
}
