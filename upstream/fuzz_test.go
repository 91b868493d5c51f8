package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/token-sidecar/token-sidecar/internal/testkit"
	"github.com/token-sidecar/token-sidecar/regions"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// bodyTransport answers every request with a fixed status and body, in
// process, so that a fuzz target runs the real client code without sockets.
type bodyTransport struct {
	status int
	body   []byte
}

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode:    b.status,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(b.body)),
		ContentLength: int64(len(b.body)),
		Request:       r,
	}, nil
}

// FuzzTenantServiceBody feeds arbitrary 200 bodies to the Tenant Service
// client: it must never panic, must accept exactly the bodies with three
// non-empty fields whose secret decodes as encoding/json would, and must
// never put the secret into an error.
func FuzzTenantServiceBody(f *testing.F) {
	for _, seed := range []string{
		`{"clientId":"id","clientSecret":"s3cr3t","region":"eu-west-1"}`,
		`{"clientId":"id","clientSecret":"\u00e9\ud83d\ude00\\\"","region":"eu-west-1","extra":[1,2]}`,
		`{"clientId":"id","clientSecret":"","region":"eu-west-1"}`,
		`{"clientId":"id","clientSecret":null,"region":"x"}`,
		`{"clientId":"id","clientSecret":42,"region":"x"}`,
		`{"clientId":"id","clientSecret":"a","clientSecret":"b","region":"x"}`,
		`{"clientSecret":"\ud800"}`,
		`[]`, `null`, `{`, `not json`, "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := NewTenantClient(TenantClientConfig{BaseURL: "http://tenant-service.invalid", CallConfig: CallConfig{
			HTTPClient: &http.Client{Transport: bodyTransport{status: 200, body: body}},
			MaxRetries: -1,
		}})
		if err != nil {
			t.Fatal(err)
		}
		creds, err := c.GenesysCredentials(context.Background(), "acme")

		var want struct {
			ClientID     string  `json:"clientId"`
			ClientSecret *string `json:"clientSecret"`
			Region       string  `json:"region"`
		}
		jsonErr := json.Unmarshal(body, &want)
		valid := jsonErr == nil && want.ClientID != "" && want.ClientSecret != nil && *want.ClientSecret != "" && want.Region != ""
		if err != nil {
			var ue *Error
			if !errors.As(err, &ue) || ue.Code != CodeUpstreamInvalidResponse {
				t.Fatalf("error %v is not UPSTREAM_INVALID_RESPONSE", err)
			}
			if want.ClientSecret != nil && len(*want.ClientSecret) >= 4 && strings.Contains(err.Error(), *want.ClientSecret) {
				t.Fatalf("error %q holds the secret", err)
			}
			if valid {
				t.Fatalf("a valid body was refused: %v", err)
			}
			return
		}
		if !valid {
			t.Fatalf("accepted a body encoding/json reads as invalid (%v): %q", jsonErr, body)
		}
		if creds.ClientID != want.ClientID || string(creds.ClientSecret) != *want.ClientSecret || creds.Region != want.Region {
			t.Fatalf("decoded %q/%q/%q, encoding/json says %q/%q/%q",
				creds.ClientID, creds.ClientSecret, creds.Region, want.ClientID, *want.ClientSecret, want.Region)
		}
		creds.Wipe()
	})
}

// FuzzTokenBody feeds arbitrary 200 bodies to the Genesys login client: no
// panic; an accepted token has an access token and a lifetime in
// (0, MaxTokenLifetime]; anything else is UPSTREAM_INVALID_RESPONSE.
func FuzzTokenBody(f *testing.F) {
	for _, seed := range []string{
		`{"access_token":"tok","token_type":"bearer","expires_in":86399}`,
		`{"access_token":"tok","expires_in":"3600"}`,
		`{"access_token":"tok","expires_in":0}`,
		`{"access_token":"tok","expires_in":-5}`,
		`{"access_token":"tok","expires_in":1e300}`,
		`{"access_token":"tok","expires_in":0.5}`,
		`{"access_token":"","expires_in":10}`,
		`{"access_token":5,"expires_in":10}`,
		`{"expires_in":10}`, `[]`, `null`, `<html>`, "",
	} {
		f.Add([]byte(seed))
	}
	region, err := regions.Lookup("eu-west-1")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := NewLoginClient(LoginClientConfig{BaseURL: "http://login.invalid", CallConfig: CallConfig{
			HTTPClient: &http.Client{Transport: bodyTransport{status: 200, body: body}},
			MaxRetries: -1,
		}})
		if err != nil {
			t.Fatal(err)
		}
		creds := &Credentials{ClientID: "id", ClientSecret: []byte("secret"), Region: "eu-west-1"}
		tok, err := c.Exchange(context.Background(), region, creds)
		if err != nil {
			var ue *Error
			if !errors.As(err, &ue) || ue.Code != CodeUpstreamInvalidResponse {
				t.Fatalf("error %v is not UPSTREAM_INVALID_RESPONSE", err)
			}
			return
		}
		if tok.AccessToken == "" || tok.ExpiresIn <= 0 || tok.ExpiresIn > MaxTokenLifetime || tok.TokenType == "" {
			t.Fatalf("accepted an unusable token: %+v from %q", tok, body)
		}
	})
}

// FuzzRetryAfter: the parser never returns a negative or absurd delay, and a
// plain number of seconds is honoured exactly, up to the saturation bound.
func FuzzRetryAfter(f *testing.F) {
	now := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	for _, seed := range []string{
		"1", "0", "120", " 5 ", "-1", "1.5", "99999999999999999999999",
		"Sun, 29 Nov 2026 00:00:10 GMT", "Sunday, 29-Nov-26 00:00:10 GMT", "Sun Nov 29 00:00:10 2026",
		"Sat, 28 Nov 2026 23:59:00 GMT", "soon", "",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := retryAfter(http.Header{"Retry-After": {v}}, now)
		if d < 0 || d > maxRetryAfterValue {
			t.Fatalf("retryAfter(%q) = %v", v, d)
		}
		if s := strings.TrimSpace(v); isDigits(s) && len(s) < 10 {
			var secs int64
			for _, c := range s {
				secs = secs*10 + int64(c-'0')
			}
			if want := min(time.Duration(secs)*time.Second, maxRetryAfterValue); d != want {
				t.Fatalf("retryAfter(%q) = %v, want %d s", v, d, secs)
			}
		}
	})
}

// FuzzTenantServiceBodyJWE feeds 200 bodies whose clientSecret is a JWE,
// or almost one, to a Tenant Service client that holds one key per
// accepted algorithm: no panic; a refusal is UPSTREAM_INVALID_RESPONSE
// whose text holds no part of the value and no plaintext; an accepted
// secret is the plaintext go-jose itself opens with the kid's key when the
// value is a JWE, else the value as encoding/json reads it.
func FuzzTenantServiceBodyJWE(f *testing.F) {
	keys := testKeys()
	ks := allTestKeys(f)
	body := func(secret string) string {
		b, _ := json.Marshal(map[string]string{"clientId": "id", "clientSecret": secret, "region": "eu-west-1"})
		return string(b)
	}
	for _, k := range keys {
		jwe := k.MustEncrypt("s3cr3t-" + k.Alg)
		f.Add([]byte(body(jwe)))
		f.Add([]byte(body(testkit.TamperJWE(jwe, 3))))
		f.Add([]byte(body(testkit.TamperJWE(jwe, 0))))
		f.Add([]byte(body(strings.Replace(jwe, ".", "..", 1))))
	}
	dir := keys[upstreamtest.AlgDir].MustEncrypt("s3cr3t")
	f.Add([]byte(body(withHeader(dir, `{"alg":"dir","enc":"A256GCM","kid":"k-dir","zip":"DEF"}`))))
	f.Add([]byte(body(withHeader(dir, `{"alg":"dir","enc":"A128GCM","kid":"k-dir"}`))))
	f.Add([]byte(body(withHeader(dir, `{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"k-dir"}`))))
	f.Add([]byte(body(withHeader(dir, `{"enc":"A256GCM"}`))))
	f.Add([]byte(body("eyJlbmMiOiJBMjU2R0NNIn0.a.b.c.d")))
	f.Add([]byte(body("plain.secret.with.four.dots")))
	f.Add([]byte(`{"clientId":"id","clientSecret":"` + dir + `","clientSecret":"x","region":"r"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := NewTenantClient(TenantClientConfig{
			BaseURL:    "http://tenant-service.invalid",
			Decryption: CredentialDecryption{Keys: staticKeys(ks)},
			CallConfig: CallConfig{HTTPClient: &http.Client{Transport: bodyTransport{status: 200, body: b}}, MaxRetries: -1},
		})
		if err != nil {
			t.Fatal(err)
		}
		creds, err := c.GenesysCredentials(context.Background(), "acme")

		var want struct {
			ClientID     string  `json:"clientId"`
			ClientSecret *string `json:"clientSecret"`
			Region       string  `json:"region"`
		}
		jsonErr := json.Unmarshal(b, &want)
		wellFormed := jsonErr == nil && want.ClientID != "" && want.ClientSecret != nil && *want.ClientSecret != "" && want.Region != ""
		value := ""
		if want.ClientSecret != nil {
			value = *want.ClientSecret
		}
		jwe := strings.TrimSpace(value)
		_, isJWE := jweHeader([]byte(jwe))
		// The oracle: go-jose alone, with the kid's key.
		var plain []byte
		var opened bool
		if isJWE {
			if obj, err := jose.ParseEncryptedCompact(jwe, allowedKeyAlgorithms, allowedContentEncryption); err == nil {
				if k, ok := ks.lookup(obj.Header.KeyID); ok {
					plain, err = obj.Decrypt(k.key)
					opened = err == nil && len(plain) > 0
				}
			}
		}
		if err != nil {
			if ue := asError(t, err, CodeUpstreamInvalidResponse); ue.Attempts != 1 {
				t.Fatalf("attempts %d", ue.Attempts)
			}
			for _, part := range strings.Split(value, ".") {
				if len(part) >= 8 && strings.Contains(err.Error(), part) {
					t.Fatalf("error %q holds part of the value", err)
				}
			}
			if opened && len(plain) >= 4 && strings.Contains(err.Error(), string(plain)) {
				t.Fatalf("error %q holds the plaintext", err)
			}
			if wellFormed && !isJWE {
				t.Fatalf("a plain, well-formed body was refused: %v", err)
			}
			return
		}
		if !wellFormed {
			t.Fatalf("accepted a body encoding/json reads as invalid (%v): %q", jsonErr, b)
		}
		switch {
		case !isJWE:
			if string(creds.ClientSecret) != value {
				t.Fatalf("plain secret %q, encoding/json says %q", creds.ClientSecret, value)
			}
		case !opened:
			t.Fatalf("accepted a JWE go-jose does not open with the kid's key: %q", value)
		case !bytes.Equal(creds.ClientSecret, plain):
			t.Fatalf("opened %q, go-jose says %q", creds.ClientSecret, plain)
		}
		creds.Wipe()
	})
}
