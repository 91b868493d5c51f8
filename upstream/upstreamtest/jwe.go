package upstreamtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// The JWE key algorithms the sidecar accepts, always with A256GCM.
const (
	AlgDir          = "dir"
	AlgRSAOAEP256   = "RSA-OAEP-256"
	AlgECDHESA256KW = "ECDH-ES+A256KW"
)

// EncryptionKey is a key pair (or, for "dir", a shared key) with which a
// fake Tenant Service encrypts the credentials it serves, as a JWE in
// compact serialization with A256GCM. It is immutable and safe for
// concurrent use.
type EncryptionKey struct {
	KID string
	Alg string
	// private is what the sidecar decrypts with; public what the Tenant
	// Service encrypts to (the same []byte for "dir").
	private, public any
}

// NewEncryptionKey generates a fresh key for alg (AlgDir: 32 random
// bytes, AlgRSAOAEP256: RSA 2048, AlgECDHESA256KW: P-256) named kid.
func NewEncryptionKey(kid, alg string) (*EncryptionKey, error) {
	k := &EncryptionKey{KID: kid, Alg: alg}
	switch alg {
	case AlgDir:
		b := make([]byte, 32)
		rand.Read(b)
		k.private, k.public = b, b
	case AlgRSAOAEP256:
		p, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		k.private, k.public = p, &p.PublicKey
	case AlgECDHESA256KW:
		p, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		k.private, k.public = p, &p.PublicKey
	default:
		return nil, fmt.Errorf("upstreamtest: unknown JWE algorithm %q", alg)
	}
	return k, nil
}

// MustEncryptionKey is NewEncryptionKey that panics on error, for tests
// and -demo.
func MustEncryptionKey(kid, alg string) *EncryptionKey {
	k, err := NewEncryptionKey(kid, alg)
	if err != nil {
		panic(err)
	}
	return k
}

// Encrypt seals plaintext for k: a compact JWE with alg k.Alg, enc A256GCM
// and kid k.KID in its protected header.
func (k *EncryptionKey) Encrypt(plaintext string) (string, error) {
	return EncryptWith(k.KID, k.Alg, k.public, plaintext)
}

// MustEncrypt is Encrypt that panics on error.
func (k *EncryptionKey) MustEncrypt(plaintext string) string {
	s, err := k.Encrypt(plaintext)
	if err != nil {
		panic(err)
	}
	return s
}

// EncryptWith seals plaintext as a compact JWE with any algorithms go-jose
// knows, for tests of what the sidecar refuses: kid goes in the protected
// header unless empty, key is what go-jose encrypts to.
func EncryptWith(kid, alg string, key any, plaintext string, enc ...string) (string, error) {
	contentEnc := jose.A256GCM
	if len(enc) > 0 {
		contentEnc = jose.ContentEncryption(enc[0])
	}
	opts := (&jose.EncrypterOptions{}).WithType("JWE")
	e, err := jose.NewEncrypter(contentEnc, jose.Recipient{Algorithm: jose.KeyAlgorithm(alg), Key: key, KeyID: kid}, opts)
	if err != nil {
		return "", err
	}
	obj, err := e.Encrypt([]byte(plaintext))
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

// JWK is k's private JWK, as the sidecar's key file holds it.
func (k *EncryptionKey) JWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.private, KeyID: k.KID, Algorithm: k.Alg, Use: "enc"}
}

// PublicJWK is k's public JWK, what the Tenant Service encrypts to; for
// "dir" it is the shared key itself.
func (k *EncryptionKey) PublicJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.public, KeyID: k.KID, Algorithm: k.Alg, Use: "enc"}
}

// JWKSet is the private JWK Set of keys, as -credential-keys-file reads it.
func JWKSet(keys ...*EncryptionKey) []byte {
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, k.JWK())
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err) // keys made by NewEncryptionKey always marshal
	}
	return b
}
