package sharedcache

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/token-sidecar/token-sidecar/cache"
)

// sealVersion is the first byte of every sealed value; a value with another
// first byte does not open.
const sealVersion = 1

// keyIDLen is the length of the key id that follows the version byte, so
// that opening tries the right key first.
const keyIDLen = 4

// ringKey is one key of the key file, with the subkeys derived from it: the
// raw key is used for nothing else, so sealing and naming never share a key.
type ringKey struct {
	id      [keyIDLen]byte
	aead    cipher.AEAD
	nameKey []byte
}

// keyring is the parsed key file: the first key seals and names new entries,
// every key opens and names entries to look up. It is immutable once built.
type keyring struct {
	keys []ringKey
}

// parseKeys reads a key file: one base64 (standard or URL alphabet, padded or
// not) 32-byte key per line; blank lines and lines starting with # are
// skipped. Errors name the line, never its content.
func parseKeys(data []byte) (*keyring, error) {
	var ring keyring
	seen := map[[keyIDLen]byte]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		raw, err := decodeKey(line)
		if err != nil {
			return nil, fmt.Errorf("key file line %d: not base64", n)
		}
		if len(raw) != 32 {
			return nil, fmt.Errorf("key file line %d: a key must be 32 bytes, this one is %d", n, len(raw))
		}
		k, err := newRingKey(raw)
		if err != nil {
			return nil, fmt.Errorf("key file line %d: %w", n, err)
		}
		if seen[k.id] {
			return nil, fmt.Errorf("key file line %d: the same key appears twice", n)
		}
		seen[k.id] = true
		ring.keys = append(ring.keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if len(ring.keys) == 0 {
		return nil, errors.New("key file holds no key (want one base64 32-byte key per line)")
	}
	return &ring, nil
}

func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// derive is HMAC-SHA256(key, label): a subkey for one purpose.
func derive(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

func newRingKey(raw []byte) (ringKey, error) {
	var k ringKey
	copy(k.id[:], derive(raw, "token-sidecar shared cache key id"))
	block, err := aes.NewCipher(derive(raw, "token-sidecar shared cache seal"))
	if err != nil {
		return k, err
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		return k, err
	}
	k.nameKey = derive(raw, "token-sidecar shared cache names")
	return k, nil
}

// associatedData binds a sealed value to its (provider, tenant): a value
// copied under another entry's name does not open.
func associatedData(key cache.Key) []byte {
	return []byte("token-sidecar/v1\x00" + key.Provider + "\x00" + key.Tenant)
}

// name is the entry name of key under ring key i: a hex HMAC, which says
// nothing about the tenant to whoever reads the server.
func (r *keyring) name(i int, key cache.Key) string {
	m := hmac.New(sha256.New, r.keys[i].nameKey)
	m.Write([]byte(key.Provider))
	m.Write([]byte{0})
	m.Write([]byte(key.Tenant))
	return hex.EncodeToString(m.Sum(nil))
}

// seal encrypts plaintext for key under the first key:
// version | key id | nonce | ciphertext and tag.
func (r *keyring) seal(key cache.Key, plaintext []byte) []byte {
	k := r.keys[0]
	out := make([]byte, 0, 1+keyIDLen+k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	out = append(out, sealVersion)
	out = append(out, k.id[:]...)
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic("sharedcache: crypto/rand failed: " + err.Error()) // never fails on supported platforms
	}
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, plaintext, associatedData(key))
}

// errUnopenable reports a value that no key opens: garbage, tampered, sealed
// for another entry, or under a key no longer in the file.
var errUnopenable = errors.New("sharedcache: the value does not open under any key")

// open decrypts a value sealed for key under any key of the ring.
func (r *keyring) open(key cache.Key, sealed []byte) ([]byte, error) {
	if len(sealed) < 1+keyIDLen || sealed[0] != sealVersion {
		return nil, errUnopenable
	}
	id, body := sealed[1:1+keyIDLen], sealed[1+keyIDLen:]
	ad := associatedData(key)
	for _, k := range r.keys {
		if !bytes.Equal(k.id[:], id) || len(body) < k.aead.NonceSize() {
			continue
		}
		ns := k.aead.NonceSize()
		if pt, err := k.aead.Open(nil, body[:ns], body[ns:], ad); err == nil {
			return pt, nil
		}
	}
	return nil, errUnopenable
}
