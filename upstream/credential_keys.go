package upstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/go-jose/go-jose/v4"
)

// The JWE algorithms the sidecar accepts, and no others: "dir" (the key is
// the AES-256-GCM content key), "RSA-OAEP-256" and "ECDH-ES+A256KW" (the
// content key is wrapped for the key), always with "A256GCM" content
// encryption. Each key of a CredentialKeys serves exactly one of them,
// decided by its type.
var (
	allowedKeyAlgorithms     = []jose.KeyAlgorithm{jose.DIRECT, jose.RSA_OAEP_256, jose.ECDH_ES_A256KW}
	allowedContentEncryption = []jose.ContentEncryption{jose.A256GCM}
)

// minRSABits is the smallest RSA modulus a key set may hold.
const minRSABits = 2048

// MaxCredentialKeysBytes bounds the size of a key file; a JWK Set of a few
// RSA-4096 keys is a few tens of kB.
const MaxCredentialKeysBytes = 1 << 20

// CredentialKeys is a set of decryption keys for encrypted credentials,
// each chosen by its key ID (kid), parsed from a JWK Set (RFC 7517).
//
// It is immutable and safe for concurrent use. Formatting or logging it
// shows the key IDs and algorithms, never key material. A nil
// *CredentialKeys holds no key.
type CredentialKeys struct {
	byID map[string]credentialKey
	ids  []string // sorted
}

// credentialKey is one private key and the one JWE algorithm it serves.
type credentialKey struct {
	alg jose.KeyAlgorithm
	key any // []byte (32 bytes), *rsa.PrivateKey or *ecdsa.PrivateKey
}

// ParseCredentialKeys reads a JWK Set: {"keys":[…]} of private keys, each
// with a kid unique in the set, and each usable for one accepted algorithm:
//
//   - "kty":"oct" with a 32-byte "k": "dir" + A256GCM;
//   - "kty":"RSA" private key of at least 2048 bits: RSA-OAEP-256;
//   - "kty":"EC" private key on P-256, P-384 or P-521: ECDH-ES+A256KW.
//
// A key's "alg", when present, must be the one its type serves, and its
// "use", when present, must be "enc". An empty set is refused: a key file
// is configured to open credentials. Errors name the key by its position
// and kid, never quote key material.
func ParseCredentialKeys(data []byte) (*CredentialKeys, error) {
	if len(data) > MaxCredentialKeysBytes {
		return nil, fmt.Errorf("JWK Set is larger than %d bytes", MaxCredentialKeysBytes)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		// Not json's text: a syntax error quotes a byte of the file, which
		// may be a byte of a key.
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, fmt.Errorf("not a JSON JWK Set: syntax error at byte %d", syn.Offset)
		}
		return nil, errors.New(`not a JWK Set: want {"keys":[…]}`)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New(`JWK Set has no keys: want {"keys":[…]} with at least one private key`)
	}
	ks := &CredentialKeys{byID: make(map[string]credentialKey, len(set.Keys))}
	for i, raw := range set.Keys {
		kid, k, err := parseCredentialKey(raw)
		if err != nil {
			if kid != "" {
				return nil, fmt.Errorf("key %d (kid %.64q): %w", i, kid, err)
			}
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if _, dup := ks.byID[kid]; dup {
			return nil, fmt.Errorf("key %d: kid %.64q appears twice; each kid must name one key", i, kid)
		}
		ks.byID[kid] = k
		ks.ids = append(ks.ids, kid)
	}
	slices.Sort(ks.ids)
	return ks, nil
}

// parseCredentialKey reads one JWK. kid is returned as soon as it is known,
// for the error message.
func parseCredentialKey(raw json.RawMessage) (kid string, _ credentialKey, _ error) {
	// The public members first, with encoding/json, so that an error about
	// them cannot quote anything else.
	var head struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return "", credentialKey{}, errors.New("not a JSON object with string kty, kid, alg and use")
	}
	kid = head.Kid
	if kid == "" {
		return "", credentialKey{}, errors.New(`has no "kid": keys are chosen by the JWE's kid`)
	}
	if head.Use != "" && head.Use != "enc" {
		return kid, credentialKey{}, fmt.Errorf(`"use" is %.16q; a decryption key must have "use":"enc" or none`, head.Use)
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(raw, &jwk); err != nil {
		// go-jose's messages name the parameter or the kty, not its value.
		return kid, credentialKey{}, fmt.Errorf("not a usable %.16s JWK: %v", head.Kty, err)
	}
	var k credentialKey
	switch key := jwk.Key.(type) {
	case []byte:
		if len(key) != 32 {
			return kid, credentialKey{}, fmt.Errorf(`"oct" key is %d bytes; "dir" with A256GCM needs 32`, len(key))
		}
		k = credentialKey{alg: jose.DIRECT, key: key}
	case *rsa.PrivateKey:
		if bits := key.N.BitLen(); bits < minRSABits {
			return kid, credentialKey{}, fmt.Errorf("RSA key has %d bits; at least %d are needed", bits, minRSABits)
		}
		k = credentialKey{alg: jose.RSA_OAEP_256, key: key}
	case *ecdsa.PrivateKey:
		switch key.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return kid, credentialKey{}, errors.New("EC key is not on P-256, P-384 or P-521")
		}
		k = credentialKey{alg: jose.ECDH_ES_A256KW, key: key}
	case *rsa.PublicKey, *ecdsa.PublicKey:
		return kid, credentialKey{}, errors.New("is a public key; the sidecar needs the private key to decrypt")
	default:
		return kid, credentialKey{}, fmt.Errorf("kty %.16q cannot decrypt with dir, RSA-OAEP-256 or ECDH-ES+A256KW", head.Kty)
	}
	if head.Alg != "" && head.Alg != string(k.alg) {
		return kid, credentialKey{}, fmt.Errorf(`"alg" is %.32q but this key type serves %s`, head.Alg, k.alg)
	}
	return kid, k, nil
}

// KeyIDs returns the key IDs of the set, sorted; nil for a nil set.
func (ks *CredentialKeys) KeyIDs() []string {
	if ks == nil {
		return nil
	}
	return slices.Clone(ks.ids)
}

// lookup returns the key named kid.
func (ks *CredentialKeys) lookup(kid string) (credentialKey, bool) {
	if ks == nil {
		return credentialKey{}, false
	}
	k, ok := ks.byID[kid]
	return k, ok
}

// String lists the key IDs and their algorithms.
func (ks *CredentialKeys) String() string {
	if ks == nil {
		return "upstream.CredentialKeys{}"
	}
	s := "upstream.CredentialKeys{"
	for i, id := range ks.ids {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%q:%s", id, ks.byID[id].alg)
	}
	return s + "}"
}

// GoString is String, so that %#v does not print the keys.
func (ks *CredentialKeys) GoString() string { return ks.String() }
