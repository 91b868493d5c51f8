package upstream

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/token-sidecar/token-sidecar/internal/testkit"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// testKeys are one key per accepted algorithm, generated once (RSA takes a
// while under -race).
var testKeys = sync.OnceValue(func() map[string]*upstreamtest.EncryptionKey {
	return map[string]*upstreamtest.EncryptionKey{
		upstreamtest.AlgDir:          upstreamtest.MustEncryptionKey("k-dir", upstreamtest.AlgDir),
		upstreamtest.AlgRSAOAEP256:   upstreamtest.MustEncryptionKey("k-rsa", upstreamtest.AlgRSAOAEP256),
		upstreamtest.AlgECDHESA256KW: upstreamtest.MustEncryptionKey("k-ec", upstreamtest.AlgECDHESA256KW),
	}
})

func testKeySet(t testing.TB, keys ...*upstreamtest.EncryptionKey) *CredentialKeys {
	t.Helper()
	ks, err := ParseCredentialKeys(upstreamtest.JWKSet(keys...))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func allTestKeys(t testing.TB) *CredentialKeys {
	k := testKeys()
	return testKeySet(t, k[upstreamtest.AlgDir], k[upstreamtest.AlgRSAOAEP256], k[upstreamtest.AlgECDHESA256KW])
}

func newOpener(t testing.TB, cfg CredentialDecryption, mp *sdkmetric.MeterProvider) *credentialOpener {
	t.Helper()
	var o *credentialOpener
	var err error
	if mp != nil {
		o, err = newCredentialOpener(cfg, mp)
	} else {
		o, err = newCredentialOpener(cfg, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func staticKeys(ks *CredentialKeys) func() *CredentialKeys {
	return func() *CredentialKeys { return ks }
}

func TestOpenEachAlgorithm(t *testing.T) {
	t.Parallel()
	ks := allTestKeys(t)
	o := newOpener(t, CredentialDecryption{Keys: staticKeys(ks)}, nil)
	for alg, key := range testKeys() {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			jwe := []byte(key.MustEncrypt("s3cr3t-" + alg))
			got, err := o.open(context.Background(), "clientSecret", jwe)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "s3cr3t-"+alg {
				t.Errorf("opened %q", got)
			}
			if !bytes.Equal(jwe, make([]byte, len(jwe))) {
				t.Error("the JWE bytes were not wiped once opened")
			}
		})
	}
}

// TestOpenIgnoresSurroundingWhitespace: a JWE pasted with its newline
// (what most tools print) still opens; a plain value keeps its whitespace.
func TestOpenIgnoresSurroundingWhitespace(t *testing.T) {
	t.Parallel()
	key := testKeys()[upstreamtest.AlgDir]
	o := newOpener(t, CredentialDecryption{Keys: staticKeys(testKeySet(t, key))}, nil)
	got, err := o.open(context.Background(), "clientSecret", []byte(" "+key.MustEncrypt("s3cr3t")+"\r\n"))
	if err != nil || string(got) != "s3cr3t" {
		t.Errorf("JWE with whitespace: %q, %v", got, err)
	}
	got, err = o.open(context.Background(), "clientSecret", []byte(" plain\n"))
	if err != nil || string(got) != " plain\n" {
		t.Errorf("plain with whitespace: %q, %v", got, err)
	}
}

func TestPlainValues(t *testing.T) {
	t.Parallel()
	o := newOpener(t, CredentialDecryption{Keys: staticKeys(allTestKeys(t))}, nil)
	// Values that have dots or base64url parts but are no JWE.
	for _, v := range []string{"plain-secret", "a.b.c.d.e", "a.b.c.d", "eyJhbGciOiJkaXIifQ.b.c.d.e", "x y.z.a.b.c", "e30.a.b.c.d"} {
		value := []byte(v)
		got, err := o.open(context.Background(), "clientSecret", value)
		if err != nil || string(got) != v || &got[0] != &value[0] {
			t.Errorf("%q: got %q, %v; want the value itself", v, got, err)
		}
	}
	req := newOpener(t, CredentialDecryption{Keys: staticKeys(allTestKeys(t)), RequireEncrypted: true}, nil)
	_, err := req.open(context.Background(), "clientSecret", []byte("plain-secret"))
	assertCredentialError(t, err, "", ReasonNotEncrypted, "plain-secret")
}

// withHeader replaces the protected header of jwe (breaking its tag, which
// does not matter for refusals decided from the header).
func withHeader(jwe, header string) string {
	parts := strings.Split(jwe, ".")
	parts[0] = base64.RawURLEncoding.EncodeToString([]byte(header))
	return strings.Join(parts, ".")
}

func TestOpenRefusals(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	dir, rsaKey, ec := keys[upstreamtest.AlgDir], keys[upstreamtest.AlgRSAOAEP256], keys[upstreamtest.AlgECDHESA256KW]
	ks := allTestKeys(t)
	other := upstreamtest.MustEncryptionKey("k-dir", upstreamtest.AlgDir) // same kid, other key
	otherEC := upstreamtest.MustEncryptionKey("k-ec", upstreamtest.AlgECDHESA256KW)
	rsaPriv := rsaKey.JWK().Key.(*rsa.PrivateKey)
	ecPriv := ec.JWK().Key.(*ecdsa.PrivateKey)
	mustEncrypt := func(kid, alg string, key any, enc ...string) string {
		s, err := upstreamtest.EncryptWith(kid, alg, key, "s3cr3t-refused", enc...)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		return s
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	cases := []struct {
		name, value, kid, reason string
	}{
		{"unknown kid", upstreamtest.MustEncryptionKey("k-new", upstreamtest.AlgDir).MustEncrypt("s3cr3t-refused"), "k-new", ReasonUnknownKID},
		{"no kid", mustEncrypt("", "dir", dir.JWK().Key), "", ReasonUnknownKID},
		{"wrong dir key", other.MustEncrypt("s3cr3t-refused"), "k-dir", ReasonDecryptFailed},
		{"wrong EC key", otherEC.MustEncrypt("s3cr3t-refused"), "k-ec", ReasonDecryptFailed},
		{"tampered ciphertext dir", testkit.TamperJWE(dir.MustEncrypt("s3cr3t-refused"), 3), "k-dir", ReasonDecryptFailed},
		{"tampered ciphertext RSA", testkit.TamperJWE(rsaKey.MustEncrypt("s3cr3t-refused"), 3), "k-rsa", ReasonDecryptFailed},
		{"tampered wrapped key RSA", testkit.TamperJWE(rsaKey.MustEncrypt("s3cr3t-refused"), 1), "k-rsa", ReasonDecryptFailed},
		{"tampered tag EC", testkit.TamperJWE(ec.MustEncrypt("s3cr3t-refused"), 4), "k-ec", ReasonDecryptFailed},
		{"tampered iv EC", testkit.TamperJWE(ec.MustEncrypt("s3cr3t-refused"), 2), "k-ec", ReasonDecryptFailed},
		{"tampered header dir", withHeader(dir.MustEncrypt("s3cr3t-refused"), `{"alg":"dir","enc":"A256GCM","kid":"k-dir","x":1}`), "k-dir", ReasonDecryptFailed},
		{"RSA1_5", mustEncrypt("k-rsa", "RSA1_5", &rsaPriv.PublicKey), "k-rsa", ReasonAlgorithm},
		{"RSA-OAEP (SHA-1)", mustEncrypt("k-rsa", "RSA-OAEP", &rsaPriv.PublicKey), "k-rsa", ReasonAlgorithm},
		{"ECDH-ES direct", mustEncrypt("k-ec", "ECDH-ES", &ecPriv.PublicKey), "k-ec", ReasonAlgorithm},
		{"ECDH-ES+A128KW", mustEncrypt("k-ec", "ECDH-ES+A128KW", &ecPriv.PublicKey), "k-ec", ReasonAlgorithm},
		{"A256KW", mustEncrypt("k-dir", "A256KW", dir.JWK().Key), "k-dir", ReasonAlgorithm},
		{"PBES2", mustEncrypt("k-dir", "PBES2-HS256+A128KW", []byte("password")), "k-dir", ReasonAlgorithm},
		{"dir with A128GCM", mustEncrypt("k-dir16", "dir", make([]byte, 16), "A128GCM"), "k-dir16", ReasonAlgorithm},
		{"RSA-OAEP-256 with A256CBC-HS512", mustEncrypt("k-rsa", "RSA-OAEP-256", &rsaPriv.PublicKey, "A256CBC-HS512"), "k-rsa", ReasonAlgorithm},
		{"alg none", withHeader(dir.MustEncrypt("s3cr3t-refused"), `{"alg":"none","enc":"A256GCM","kid":"k-dir"}`), "k-dir", ReasonAlgorithm},
		{"zip", withHeader(dir.MustEncrypt("s3cr3t-refused"), `{"alg":"dir","enc":"A256GCM","kid":"k-dir","zip":"DEF"}`), "k-dir", ReasonAlgorithm},
		{"crit", withHeader(dir.MustEncrypt("s3cr3t-refused"), `{"alg":"dir","enc":"A256GCM","kid":"k-dir","crit":["exp"],"exp":1}`), "k-dir", ReasonMalformed},
		{"RSA JWE for the dir kid", mustEncrypt("k-dir", "RSA-OAEP-256", &rsaPriv.PublicKey), "k-dir", ReasonKeyMismatch},
		{"EC JWE for the RSA kid", mustEncrypt("k-rsa", "ECDH-ES+A256KW", &ecPriv.PublicKey), "k-rsa", ReasonKeyMismatch},
		{"EC JWE on another curve", mustEncrypt("k-ec", "ECDH-ES+A256KW", &p384.PublicKey), "k-ec", ReasonDecryptFailed},
		{"bad base64 part", func() string { p := strings.Split(dir.MustEncrypt("x"), "."); p[3] = "!!"; return strings.Join(p, ".") }(), "", ""},
		{"part with padding chars", strings.Replace(dir.MustEncrypt("s3cr3t-refused"), ".", ".A=", 1), "", ""},
		{"empty ciphertext", func() string { p := strings.Split(dir.MustEncrypt("x"), "."); p[3] = ""; return strings.Join(p, ".") }(), "k-dir", ReasonDecryptFailed},
		{"non-string kid", withHeader(dir.MustEncrypt("s3cr3t-refused"), `{"alg":"dir","enc":"A256GCM","kid":7}`), "", ReasonMalformed},
	}
	o := newOpener(t, CredentialDecryption{Keys: staticKeys(ks)}, nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			value := []byte(c.value)
			got, err := o.open(context.Background(), "clientSecret", value)
			if c.reason == "" {
				// Not a JWE by its shape: used as it is.
				if err != nil || string(got) != c.value {
					t.Fatalf("got %q, %v; want the value as plain", got, err)
				}
				return
			}
			assertCredentialError(t, err, c.kid, c.reason, c.value)
		})
	}
}

// assertCredentialError checks err's reason and kid, and that its text
// names them and holds no part of value longer than a few characters.
func assertCredentialError(t *testing.T, err error, kid, reason, value string) {
	t.Helper()
	var ce *CredentialError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *CredentialError", err)
	}
	if ce.Reason != reason || ce.KeyID != kid {
		t.Fatalf("reason %q kid %q, want %q %q (%v)", ce.Reason, ce.KeyID, reason, kid, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, reason) || (kid != "" && !strings.Contains(msg, `"`+kid+`"`)) {
		t.Errorf("message %q does not name the kid and the reason", msg)
	}
	for _, part := range strings.Split(value, ".") {
		if len(part) >= 8 && strings.Contains(msg, part) {
			t.Errorf("message %q holds a part of the value", msg)
		}
	}
	if strings.Contains(msg, "s3cr3t") {
		t.Errorf("message %q holds the plaintext", msg)
	}
}

func TestOpenWithoutKeys(t *testing.T) {
	t.Parallel()
	jwe := testKeys()[upstreamtest.AlgDir].MustEncrypt("s3cr3t-x")
	for name, cfg := range map[string]CredentialDecryption{
		"zero config": {},
		"nil set":     {Keys: func() *CredentialKeys { return nil }},
	} {
		_, err := newOpener(t, cfg, nil).open(context.Background(), "clientSecret", []byte(jwe))
		t.Run(name, func(t *testing.T) { assertCredentialError(t, err, "k-dir", ReasonUnknownKID, jwe) })
	}
}

// TestOpenKeyRotation: with the old and the new key in the set, values
// sealed for either open; once the old one is gone, its kid is unknown.
func TestOpenKeyRotation(t *testing.T) {
	t.Parallel()
	old := testKeys()[upstreamtest.AlgRSAOAEP256]
	next := upstreamtest.MustEncryptionKey("k-next", upstreamtest.AlgECDHESA256KW)
	var current = testKeySet(t, old, next)
	o := newOpener(t, CredentialDecryption{Keys: func() *CredentialKeys { return current }}, nil)
	for _, k := range []*upstreamtest.EncryptionKey{old, next} {
		got, err := o.open(context.Background(), "clientSecret", []byte(k.MustEncrypt("s3cr3t-"+k.KID)))
		if err != nil || string(got) != "s3cr3t-"+k.KID {
			t.Errorf("%s: %q, %v", k.KID, got, err)
		}
	}
	current = testKeySet(t, next)
	_, err := o.open(context.Background(), "clientSecret", []byte(old.MustEncrypt("s3cr3t-old")))
	assertCredentialError(t, err, old.KID, ReasonUnknownKID, "")
}

func TestOpenCountsByOutcome(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	key := testKeys()[upstreamtest.AlgDir]
	o := newOpener(t, CredentialDecryption{Keys: staticKeys(testKeySet(t, key))}, mp)
	ctx := context.Background()
	o.open(ctx, "clientSecret", []byte(key.MustEncrypt("a")))
	o.open(ctx, "clientSecret", []byte(key.MustEncrypt("b")))
	o.open(ctx, "clientSecret", []byte("plain"))
	o.open(ctx, "clientSecret", []byte(testkit.TamperJWE(key.MustEncrypt("c"), 3)))
	o.open(ctx, "clientSecret", []byte(upstreamtest.MustEncryptionKey("nope", "dir").MustEncrypt("d")))
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "token_sidecar.credential.decryptions" {
				continue
			}
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				v, _ := p.Attributes.Value(attribute.Key("outcome"))
				got[v.AsString()] += p.Value
			}
		}
	}
	want := map[string]int64{DecryptOK: 2, DecryptPlain: 1, ReasonDecryptFailed: 1, ReasonUnknownKID: 1}
	if len(got) != len(want) {
		t.Errorf("counted %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("counted %v, want %v", got, want)
		}
	}
}

// TestGoJoseRefusesWhatWeRefuse pins the library behaviour the opener
// relies on: listing the algorithms at parse time refuses the others.
func TestGoJoseRefusesWhatWeRefuse(t *testing.T) {
	t.Parallel()
	rsaPriv := testKeys()[upstreamtest.AlgRSAOAEP256].JWK().Key.(*rsa.PrivateKey)
	s, err := upstreamtest.EncryptWith("k", "RSA1_5", &rsaPriv.PublicKey, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jose.ParseEncryptedCompact(s, allowedKeyAlgorithms, allowedContentEncryption); err == nil {
		t.Error("go-jose parsed an RSA1_5 JWE with the allow-list")
	}
}
