// Command seal-credential makes a key for token-sidecar's encrypted
// credentials and seals a secret for it, the way a Tenant Service would:
//
//	seal-credential keygen -kid 2026-12 -private jwks.json -public public.jwk
//	printf %s "$SECRET" | seal-credential seal -key public.jwk
//
// keygen writes the private JWK Set the sidecar reads
// (-credential-keys-file; keep it in a Secret) and the public JWK the
// Tenant Service encrypts to; -alg is ECDH-ES+A256KW (P-256, the default),
// RSA-OAEP-256 (RSA 3072) or dir (a 32-byte shared key: then both files
// hold the same secret key). seal reads the plaintext from stdin and prints
// a compact JWE with A256GCM and the key's kid. It is go-jose, nothing
// more: any JOSE library that sets kid does the same.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/go-jose/go-jose/v4"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "seal-credential:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: seal-credential keygen|seal [flags]")
	}
	switch args[0] {
	case "keygen":
		return keygen(args[1:])
	case "seal":
		return seal(args[1:], stdin, stdout)
	}
	return fmt.Errorf("unknown command %q: want keygen or seal", args[0])
}

func keygen(args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	alg := fs.String("alg", string(jose.ECDH_ES_A256KW), "ECDH-ES+A256KW, RSA-OAEP-256 or dir")
	kid := fs.String("kid", "", "key ID (required); name keys so that rotations are visible, e.g. 2026-12")
	private := fs.String("private", "jwks.json", "file for the private JWK Set (the sidecar's -credential-keys-file)")
	public := fs.String("public", "public.jwk", "file for the public JWK (what the Tenant Service encrypts to)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kid == "" {
		return errors.New("keygen: -kid is required")
	}
	var priv, pub any
	switch jose.KeyAlgorithm(*alg) {
	case jose.ECDH_ES_A256KW:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		priv, pub = k, &k.PublicKey
	case jose.RSA_OAEP_256:
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			return err
		}
		priv, pub = k, &k.PublicKey
	case jose.DIRECT:
		k := make([]byte, 32)
		rand.Read(k)
		priv, pub = k, k
	default:
		return fmt.Errorf("keygen: -alg %q: want ECDH-ES+A256KW, RSA-OAEP-256 or dir", *alg)
	}
	set, err := json.MarshalIndent(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: priv, KeyID: *kid, Algorithm: *alg, Use: "enc"}}}, "", "  ")
	if err != nil {
		return err
	}
	pubJWK, err := json.MarshalIndent(jose.JSONWebKey{Key: pub, KeyID: *kid, Algorithm: *alg, Use: "enc"}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(*private, append(set, '\n'), 0o600); err != nil {
		return err
	}
	return os.WriteFile(*public, append(pubJWK, '\n'), 0o644)
}

func seal(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("seal", flag.ContinueOnError)
	keyFile := fs.String("key", "public.jwk", "public JWK to encrypt to (from keygen)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raw, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(raw); err != nil {
		return fmt.Errorf("seal: %s is not a JWK: %w", *keyFile, err)
	}
	if key.KeyID == "" || key.Algorithm == "" {
		return fmt.Errorf("seal: %s needs a kid and an alg", *keyFile)
	}
	plaintext, err := io.ReadAll(stdin)
	if err != nil {
		return err
	}
	if len(plaintext) == 0 {
		return errors.New("seal: nothing to seal on stdin")
	}
	enc, err := jose.NewEncrypter(jose.A256GCM,
		jose.Recipient{Algorithm: jose.KeyAlgorithm(key.Algorithm), Key: key.Key, KeyID: key.KeyID}, nil)
	if err != nil {
		return err
	}
	obj, err := enc.Encrypt(plaintext)
	clear(plaintext)
	if err != nil {
		return err
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, s)
	return err
}
