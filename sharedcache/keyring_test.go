package sharedcache

import (
	"context"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
)

func TestParseKeys(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct {
		name, file string
		keys       int
		err        string
	}{
		{"one", k1 + "\n", 1, ""},
		{"two with comment and blanks", "# rotated 2026-12\n\n" + k1 + "\n  " + k2 + "  \n", 2, ""},
		{"url alphabet unpadded", strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(k1), "="), 1, ""},
		{"empty", "\n# nothing\n", 0, "no key"},
		{"not base64", k1 + "\nnot*base64!\n", 0, "line 2: not base64"},
		{"short", short, 0, "line 1: a key must be 32 bytes, this one is 16"},
		{"twice", k1 + "\n" + k1, 0, "line 2: the same key appears twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ring, err := parseKeys([]byte(tc.file))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), k1) || strings.Contains(err.Error(), "not*base64") {
					t.Fatal("the error quotes the key file")
				}
				return
			}
			if err != nil || len(ring.keys) != tc.keys {
				t.Fatalf("%v, %d keys; want %d", err, len(ring.keys), tc.keys)
			}
		})
	}
}

func TestSealedValuesOpenOnlyForTheirEntryAndKeys(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	old, _ := parseKeys([]byte(k1))
	rotated, _ := parseKeys([]byte(k2 + "\n" + k1))
	other, _ := parseKeys([]byte(k2))
	pt := []byte("plaintext")
	sealed := old.seal(key1, pt)
	if got, err := rotated.open(key1, sealed); err != nil || string(got) != "plaintext" {
		t.Fatalf("a rotated ring does not open the old key's value: %v", err)
	}
	if _, err := other.open(key1, sealed); err == nil {
		t.Fatal("a ring without the key opened the value")
	}
	if _, err := old.open(cache.Key{Provider: "genesys", Tenant: "tenant-b"}, sealed); err == nil {
		t.Fatal("the value opened for another tenant")
	}
	if _, err := old.open(cache.Key{Provider: "whatsapp", Tenant: key1.Tenant}, sealed); err == nil {
		t.Fatal("the value opened for another provider")
	}
	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	if _, err := old.open(key1, tampered); err == nil {
		t.Fatal("a tampered value opened")
	}
	if old.name(0, key1) == rotated.name(0, key1) || old.name(0, key1) != rotated.name(1, key1) {
		t.Fatal("entry names do not follow the keys")
	}
}

func TestRotatedKeysStillFindEntriesSealedUnderTheOldFirstKey(t *testing.T) {
	srv := redistest.Start(t)
	k1, k2 := newKey(t), newKey(t)
	a := newPod(t, srv.URL(), writeKeyFile(t, k1))
	b := newPod(t, srv.URL(), writeKeyFile(t, k2, k1)) // rolled out with the new key first
	want := mustFetch(t, a, miss(key1))
	if got := mustFetch(t, b, miss(key1)); !same(got, want) || b.up.calls.Load() != 0 {
		t.Fatalf("pod b (rotated keys) got %q after %d calls, want pod a's token", got.AccessToken, b.up.calls.Load())
	}
}

func TestKeyFileIsReReadWhenItChanges(t *testing.T) {
	srv := redistest.Start(t)
	k1, k2 := newKey(t), newKey(t)
	path := writeKeyFile(t, k1)
	p := newPod(t, srv.URL(), path, func(c *Config) { c.KeyPollInterval = 20 * time.Millisecond })
	first := p.ring.Load()

	if err := os.WriteFile(path, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the bad file is logged", func() bool { return strings.Contains(p.logs.String(), "does not parse") })
	if p.ring.Load() != first {
		t.Fatal("a bad key file replaced the keys")
	}
	if err := os.WriteFile(path, []byte(k2+"\n"+k1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new keys are used", func() bool { return len(p.ring.Load().keys) == 2 })
	mustFetch(t, p, miss(key1))
	n := p.namesOf(p.ring.Load(), key1)
	v, err := srv.Client().Get(context.Background(), n.entries[0]).Bytes()
	if err != nil {
		t.Fatalf("no entry under the new first key's name: %v", err)
	}
	only2, _ := parseKeys([]byte(k2))
	if _, err := only2.open(key1, v); err != nil {
		t.Fatal("the entry is not sealed under the new first key")
	}
	if strings.Contains(p.logs.String(), k1) || strings.Contains(p.logs.String(), k2) {
		t.Fatal("a key was logged")
	}
}

func TestNewRefusesMissingOrBadSettingsWithoutQuotingTheURL(t *testing.T) {
	keys := writeKeyFile(t, newKey(t))
	bad := writeKeyFile(t, "short")
	inner := newUpstream()
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"no inner", Config{URL: "redis://h:1", KeyFile: keys}, "Inner"},
		{"no url", Config{Inner: inner, KeyFile: keys}, "URL is required"},
		{"http url", Config{Inner: inner, URL: "http://user:s3cret@h:1", KeyFile: keys}, "redis://"},
		{"no key file", Config{Inner: inner, URL: "redis://:s3cret@h:1"}, "key file is required"},
		{"missing key file", Config{Inner: inner, URL: "redis://:s3cret@h:1", KeyFile: keys + ".missing"}, "no such file"},
		{"bad key file", Config{Inner: inner, URL: "redis://:s3cret@h:1", KeyFile: bad}, "line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("New accepted it")
			}
			if !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("err %q, want it to say %q and never the password", err, tc.err)
			}
		})
	}
}

func TestDuringARotationTheLaterOfTwoEntriesIsServed(t *testing.T) {
	srv := redistest.Start(t)
	k1, k2 := newKey(t), newKey(t)
	p := newPod(t, srv.URL(), writeKeyFile(t, k2, k1))
	ring := p.ring.Load()
	n := p.namesOf(ring, key1)
	old, _ := parseKeys([]byte(k1))
	now := time.Now()
	older := sharedEntry{token: cache.Token{AccessToken: "older", Lifetime: time.Hour, ExpiresAt: now.Add(10 * time.Minute)}}
	newer := sharedEntry{token: cache.Token{AccessToken: "newer", Lifetime: time.Hour, ExpiresAt: now.Add(50 * time.Minute)}}
	rdb := srv.Client()
	// The newer token was written by a pod still on the old first key.
	if err := rdb.Set(context.Background(), n.entries[0], ring.seal(key1, older.marshal()), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(context.Background(), n.entries[1], old.seal(key1, newer.marshal()), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if got := mustFetch(t, p, miss(key1)); got.AccessToken != "newer" {
		t.Fatalf("served %q, want the later token", got.AccessToken)
	}
}
