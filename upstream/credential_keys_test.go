package upstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/token-sidecar/token-sidecar/internal/testkit"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

func TestParseCredentialKeys(t *testing.T) {
	t.Parallel()
	k := testKeys()
	ks, err := ParseCredentialKeys(upstreamtest.JWKSet(k[upstreamtest.AlgRSAOAEP256], k[upstreamtest.AlgDir], k[upstreamtest.AlgECDHESA256KW]))
	if err != nil {
		t.Fatal(err)
	}
	if got := ks.KeyIDs(); !slices.Equal(got, []string{"k-dir", "k-ec", "k-rsa"}) {
		t.Errorf("KeyIDs %v", got)
	}
	out := fmt.Sprintf("%v %+v %#v %s", ks, ks, ks, ks)
	if !strings.Contains(out, `"k-rsa":RSA-OAEP-256`) {
		t.Errorf("formatted: %s", out)
	}
	dirKey := base64.RawURLEncoding.EncodeToString(k[upstreamtest.AlgDir].JWK().Key.([]byte))
	if strings.Contains(out, dirKey) || strings.Contains(out, "0x") {
		t.Errorf("formatting shows key material: %s", out)
	}
	// alg and use may be left out.
	bare := fmt.Sprintf(`{"keys":[{"kty":"oct","kid":"a","k":%q}]}`, dirKey)
	if _, err := ParseCredentialKeys([]byte(bare)); err != nil {
		t.Errorf("key without alg and use: %v", err)
	}
	var nilSet *CredentialKeys
	if nilSet.KeyIDs() != nil || nilSet.String() == "" {
		t.Error("nil set")
	}
}

// jwkJSON marshals a JWK with kid and alg, then lets edit change members.
func jwkJSON(t *testing.T, key any, kid, alg string, edit func(map[string]any)) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	if edit != nil {
		edit(m)
	}
	b, _ = json.Marshal(m)
	return string(b)
}

func TestParseCredentialKeysRefusals(t *testing.T) {
	t.Parallel()
	k := testKeys()
	secret := k[upstreamtest.AlgDir].JWK().Key.([]byte)
	rsaPriv := k[upstreamtest.AlgRSAOAEP256].JWK().Key.(*rsa.PrivateKey)
	ecPriv := k[upstreamtest.AlgECDHESA256KW].JWK().Key.(*ecdsa.PrivateKey)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	set := func(keys ...string) string { return `{"keys":[` + strings.Join(keys, ",") + `]}` }
	cases := map[string]struct{ file, want string }{
		"not JSON":          {`{"keys":[{"kty":"oct","k":"c2VjcmV0` + "\x01", "syntax error at byte"},
		"not a set":         {`[1,2]`, "not a JWK Set"},
		"no keys":           {`{"keys":[]}`, "has no keys"},
		"missing keys":      {`{}`, "has no keys"},
		"no kid":            {set(jwkJSON(t, secret, "", "", nil)), `key 0: has no "kid"`},
		"duplicate kid":     {set(jwkJSON(t, secret, "a", "", nil), jwkJSON(t, rsaPriv, "a", "", nil)), `key 1: kid "a" appears twice`},
		"public RSA":        {set(jwkJSON(t, &rsaPriv.PublicKey, "pub", "", nil)), `key 0 (kid "pub"): is a public key`},
		"public EC":         {set(jwkJSON(t, &ecPriv.PublicKey, "pub", "", nil)), `is a public key`},
		"short oct":         {set(jwkJSON(t, secret[:16], "s", "", nil)), `"oct" key is 16 bytes`},
		"small RSA":         {set(jwkJSON(t, small, "r", "", nil)), "RSA key has 1024 bits"},
		"P-224":             {set(jwkJSON(t, ecPriv, "e", "", func(m map[string]any) { m["crv"] = "P-224" })), `key 0 (kid "e"): not a usable EC JWK`},
		"use sig":           {set(jwkJSON(t, rsaPriv, "r", "", func(m map[string]any) { m["use"] = "sig" })), `"use" is "sig"`},
		"alg for other key": {set(jwkJSON(t, rsaPriv, "r", "RSA-OAEP", nil)), `"alg" is "RSA-OAEP" but this key type serves RSA-OAEP-256`},
		"alg dir on RSA":    {set(jwkJSON(t, rsaPriv, "r", "dir", nil)), `serves RSA-OAEP-256`},
		"OKP":               {set(`{"kty":"OKP","crv":"Ed25519","kid":"o","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}`), `kty "OKP" cannot decrypt`},
		"unknown kty":       {set(`{"kty":"XYZ","kid":"x"}`), `not a usable XYZ JWK`},
		"kid not a string":  {set(`{"kty":"oct","kid":5,"k":"AA"}`), "key 0: not a JSON object"},
		"bad base64 d":      {set(jwkJSON(t, rsaPriv, "r", "", func(m map[string]any) { m["d"] = "!!!" })), `key 0 (kid "r"): not a usable RSA JWK`},
		"too large":         {`{"keys":[` + strings.Repeat(" ", MaxCredentialKeysBytes) + `]}`, "larger than"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseCredentialKeys([]byte(c.file))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			// No key material: no base64 run of the file's secret members.
			var m struct{ Keys []map[string]any }
			json.Unmarshal([]byte(c.file), &m)
			for _, key := range m.Keys {
				for _, member := range []string{"k", "d", "p", "q", "dp", "dq", "qi"} {
					if v, ok := key[member].(string); ok && len(v) >= 4 && strings.Contains(err.Error(), v[:4]) {
						t.Errorf("error %q may quote member %s", err, member)
					}
				}
			}
		})
	}
}

func TestCredentialKeyFileReloads(t *testing.T) {
	t.Parallel()
	k := testKeys()
	oldKey, newKey := k[upstreamtest.AlgRSAOAEP256], k[upstreamtest.AlgECDHESA256KW]
	dir := t.TempDir()
	path := testkit.InstallKeyFile(t, dir, "keys.json", upstreamtest.JWKSet(oldKey))
	f, err := LoadCredentialKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if ids := f.Keys().KeyIDs(); !slices.Equal(ids, []string{"k-rsa"}) {
		t.Fatalf("loaded %v", ids)
	}
	if r := f.Reload(); r.Changed || r.Err != nil {
		t.Errorf("unchanged file reported %+v", r)
	}

	// Rotation: the new key joins, the old stays.
	testkit.InstallKeyFile(t, dir, "keys.json", upstreamtest.JWKSet(oldKey, newKey))
	if r := f.Reload(); !r.Changed || r.Err != nil || !slices.Equal(r.KeyIDs, []string{"k-ec", "k-rsa"}) {
		t.Errorf("after the swap: %+v", r)
	}
	// A bad file: reported once, the keys stay.
	testkit.InstallKeyFile(t, dir, "keys.json", []byte(`{"keys":[{"kty":"oct","kid":"x","k":"c2hvcnQ"}]}`))
	r := f.Reload()
	if !r.Changed || r.Err == nil || !strings.Contains(r.Err.Error(), path) || !strings.Contains(r.Err.Error(), `kid "x"`) {
		t.Errorf("bad file: %+v", r)
	}
	if !slices.Equal(r.KeyIDs, []string{"k-ec", "k-rsa"}) || !slices.Equal(f.Keys().KeyIDs(), []string{"k-ec", "k-rsa"}) {
		t.Errorf("bad file replaced the keys: %v", f.Keys().KeyIDs())
	}
	if r := f.Reload(); r.Changed {
		t.Errorf("the same bad file reported again: %+v", r)
	}
	// The old key leaves.
	testkit.InstallKeyFile(t, dir, "keys.json", upstreamtest.JWKSet(newKey))
	if r := f.Reload(); !r.Changed || r.Err != nil || !slices.Equal(f.Keys().KeyIDs(), []string{"k-ec"}) {
		t.Errorf("after the old key left: %+v", r)
	}
	// A removed file is an error; the keys stay.
	os.Remove(path)
	if r := f.Reload(); r.Err == nil || f.Keys() == nil {
		t.Errorf("removed file: %+v", r)
	}
	// Still removed at the next poll: reported once, not at every poll.
	if r := f.Reload(); r.Changed || r.Err != nil {
		t.Errorf("the same missing file reported again: %+v", r)
	}
	// Back, then gone again: that is news once more.
	testkit.InstallKeyFile(t, dir, "keys.json", upstreamtest.JWKSet(oldKey))
	if r := f.Reload(); !r.Changed || r.Err != nil || !slices.Equal(f.Keys().KeyIDs(), []string{"k-rsa"}) {
		t.Errorf("after the file came back: %+v", r)
	}
	os.Remove(path)
	if r := f.Reload(); r.Err == nil {
		t.Errorf("removed again: %+v", r)
	}
}

func TestLoadCredentialKeyFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := LoadCredentialKeyFile(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"keys":[]}`), 0o600)
	if _, err := LoadCredentialKeyFile(bad); err == nil || !strings.Contains(err.Error(), "bad.json: JWK Set has no keys") {
		t.Errorf("bad file: %v", err)
	}
}

// TestCredentialKeyFileWatch: the watcher picks up a swapped file and
// reports it, and an opener that reads the file's keys opens with them.
func TestCredentialKeyFileWatch(t *testing.T) {
	t.Parallel()
	k := testKeys()
	oldKey, newKey := k[upstreamtest.AlgDir], k[upstreamtest.AlgECDHESA256KW]
	dir := t.TempDir()
	f, err := LoadCredentialKeyFile(testkit.InstallKeyFile(t, dir, "keys.json", upstreamtest.JWKSet(oldKey)))
	if err != nil {
		t.Fatal(err)
	}
	o := newOpener(t, CredentialDecryption{Keys: f.Keys}, nil)
	if _, err := o.open(context.Background(), "clientSecret", []byte(newKey.MustEncrypt("s3cr3t-new"))); err == nil {
		t.Fatal("opened with a key not loaded yet")
	}
	ctx, cancel := context.WithCancel(context.Background())
	reports := make(chan KeyFileReload, 10)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.Watch(ctx, 5*time.Millisecond, func(r KeyFileReload) { reports <- r }) }()
	defer func() { cancel(); wg.Wait() }()

	testkit.InstallKeyFile(t, dir, "keys.json", upstreamtest.JWKSet(oldKey, newKey))
	select {
	case r := <-reports:
		if r.Err != nil || !slices.Equal(r.KeyIDs, []string{"k-dir", "k-ec"}) {
			t.Fatalf("report %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the swap was not picked up")
	}
	for _, key := range []*upstreamtest.EncryptionKey{oldKey, newKey} {
		if got, err := o.open(context.Background(), "clientSecret", []byte(key.MustEncrypt("s3cr3t-"+key.KID))); err != nil || string(got) != "s3cr3t-"+key.KID {
			t.Errorf("%s after the swap: %q, %v", key.KID, got, err)
		}
	}
}
