package upstream

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/token-sidecar/token-sidecar/internal/testkit"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// withKeys configures a tenant client to open JWEs with ks.
func withKeys(ks *CredentialKeys, require bool) func(*TenantClientConfig) {
	return func(c *TenantClientConfig) {
		c.Decryption = CredentialDecryption{Keys: staticKeys(ks), RequireEncrypted: require}
	}
}

func TestGenesysCredentialsOpensEachAlgorithm(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	c := newTenantClient(t, ts.URL(), withKeys(allTestKeys(t), true))
	for alg, key := range testKeys() {
		tenant := "t-" + key.KID
		secret := `s3cr3t-"` + alg + `"\/é`
		ts.SetCredentials(tenant, upstreamtest.Credentials{ClientID: "id-" + tenant, ClientSecret: secret, Region: "eu-west-1"})
		ts.EncryptFor(tenant, key)
		creds, err := c.GenesysCredentials(context.Background(), tenant)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if string(creds.ClientSecret) != secret || creds.ClientID != "id-"+tenant {
			t.Errorf("%s: got %q", alg, creds.ClientSecret)
		}
		creds.Wipe()
	}
}

func TestStaticTokenOpensAJWE(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	key := testKeys()[upstreamtest.AlgECDHESA256KW]
	c := newTenantClient(t, ts.URL(), withKeys(testKeySet(t, key), false))
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	ts.SetStaticToken("acme", ProviderWhatsApp, "wa-t0ken-secret", exp)
	ts.EncryptFor("acme", key)
	st, err := c.StaticToken(context.Background(), "acme", ProviderWhatsApp)
	if err != nil || st.AccessToken != "wa-t0ken-secret" || !st.ExpiresAt.Equal(exp) {
		t.Fatalf("got %v %v", st, err)
	}
	ts.EncryptFor("acme", upstreamtest.MustEncryptionKey("stranger", upstreamtest.AlgDir))
	_, err = c.StaticToken(context.Background(), "acme", ProviderWhatsApp)
	var ce *CredentialError
	if asError(t, err, CodeUpstreamInvalidResponse); !errors.As(err, &ce) || ce.Field != "accessToken" || ce.Reason != ReasonUnknownKID {
		t.Errorf("error %v", err)
	}
}

// TestCredentialThatCannotBeOpenedIsNotRetried: one Tenant Service call,
// UPSTREAM_INVALID_RESPONSE naming the kid and the reason, nothing of the
// JWE or the secret in the error or the logs.
func TestCredentialThatCannotBeOpenedIsNotRetried(t *testing.T) {
	t.Parallel()
	key := testKeys()[upstreamtest.AlgDir]
	jwe := testkit.TamperJWE(key.MustEncrypt("s3cr3t-tampered"), 3)
	for name, arrange := range map[string]func(*upstreamtest.TenantService){
		"tampered": func(ts *upstreamtest.TenantService) {
			ts.SetBody("acme", "genesys", 200, []byte(`{"clientId":"cid","clientSecret":"`+jwe+`","region":"eu-west-1"}`), "")
		},
		"plain while required": func(ts *upstreamtest.TenantService) {
			ts.SetCredentials("acme", upstreamtest.Credentials{ClientID: "cid", ClientSecret: "s3cr3t-plain", Region: "eu-west-1"})
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ts := newFakeTenantService(t)
			arrange(ts)
			logs := &logCapture{}
			c := newTenantClient(t, ts.URL(), withKeys(testKeySet(t, key), true), func(c *TenantClientConfig) { c.Logger = logs.logger() })
			_, err := c.GenesysCredentials(context.Background(), "acme")
			e := asError(t, err, CodeUpstreamInvalidResponse)
			if e.Upstream != TenantService || e.Status != 200 || e.Attempts != 1 || e.RetryAfterHint != 0 {
				t.Errorf("error %+v", e)
			}
			if n := ts.Calls("acme", "genesys"); n != 1 {
				t.Errorf("Tenant Service calls = %d, want 1", n)
			}
			if name == "tampered" && !strings.Contains(err.Error(), `clientSecret JWE (kid "k-dir") cannot be opened: decrypt_failed`) {
				t.Errorf("message %q", err)
			}
			for _, part := range strings.Split(jwe, ".") {
				assertNoSecrets(t, "error and logs", err.Error()+logs.String(), part)
			}
			assertNoSecrets(t, "error and logs", err.Error()+logs.String(), "s3cr3t")
		})
	}
}

// TestBreakerDoesNotCountCredentialsThatCannotBeOpened: the host answered
// 200; a JWE it cannot open is a verdict on one tenant's data, not a host
// failure. With a breaker that opens at the first failure, a run of them
// leaves it closed and other tenants served.
func TestBreakerDoesNotCountCredentialsThatCannotBeOpened(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	key := testKeys()[upstreamtest.AlgDir]
	ts.SetBody("bad", "genesys", 200, []byte(`{"clientId":"cid","clientSecret":"`+testkit.TamperJWE(key.MustEncrypt("x"), 3)+`","region":"eu-west-1"}`), "")
	ts.SetCredentials("good", upstreamtest.Credentials{ClientID: "cid", ClientSecret: "s3cr3t", Region: "eu-west-1"})
	c := newTenantClient(t, ts.URL(), withKeys(testKeySet(t, key), false), func(cfg *TenantClientConfig) {
		cfg.Breaker = BreakerConfig{FailureThreshold: 1, FailureRate: 1, OpenDuration: 10 * time.Second}
	})
	for range 5 {
		_, err := c.GenesysCredentials(context.Background(), "bad")
		asError(t, err, CodeUpstreamInvalidResponse)
	}
	cb := tenantBreaker(t, c, ts.URL())
	if cb.cb.State() != circuitbreaker.ClosedState || cb.cb.Metrics().Failures() != 0 {
		t.Errorf("breaker %v with %d failures", cb.cb.State(), cb.cb.Metrics().Failures())
	}
	creds, err := c.GenesysCredentials(context.Background(), "good")
	if err != nil {
		t.Fatal(err)
	}
	creds.Wipe()
}

// TestDecryptedSecretIsZeroedAfterIssue is TestSecretIsZeroedAfterIssue for
// a secret that arrived as a JWE: the very buffer the decryption produced
// is zero after the exchange, on success and on failure.
func TestDecryptedSecretIsZeroedAfterIssue(t *testing.T) {
	t.Parallel()
	for alg, key := range testKeys() {
		for _, outcome := range []string{"success", "rejected client", "invalid token answer"} {
			t.Run(alg+"/"+outcome, func(t *testing.T) {
				t.Parallel()
				f := newPipelineFixture(t)
				f.ts.EncryptFor("acme", key)
				f.p.Tenants = newTenantClient(t, f.ts.URL(), withKeys(testKeySet(t, key), true))
				switch outcome {
				case "rejected client":
					f.login.DisableGrant(pipeID)
				case "invalid token answer":
					f.login.Script(pipeID, upstreamtest.Step{Status: 200, Body: []byte(`{}`)})
				}
				var held []byte
				var creds *Credentials
				f.p.inspect = func(c *Credentials) {
					held, creds = c.ClientSecret, c
					if string(held) != pipeSecret {
						t.Errorf("the exchange got %q, not the plaintext", held)
					}
				}
				_, err := f.p.Issue(context.Background(), "genesys", "acme")
				if (outcome == "success") != (err == nil) {
					t.Fatalf("err = %v", err)
				}
				if len(held) != len(pipeSecret) || !bytes.Equal(held, make([]byte, len(held))) {
					t.Errorf("decrypted buffer not zeroed: %q", held)
				}
				if creds.ClientSecret != nil || creds.ClientID != "" {
					t.Error("credentials still reference the secret or ID")
				}
			})
		}
	}
}
