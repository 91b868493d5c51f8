package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
)

// CredentialDecryption says how a TenantClient opens credential values
// (clientSecret, accessToken) that the Tenant Service delivers encrypted, as
// a JWE in compact serialization. The zero value holds no key and accepts
// plain values: a JWE is then refused as unknown_kid.
type CredentialDecryption struct {
	// Keys returns the keys to open a JWE with, chosen by its kid; it is
	// called once per value, so a reloaded key file takes effect at the
	// next fetch. Nil, or a nil result, means no key.
	Keys func() *CredentialKeys
	// RequireEncrypted refuses a value that is not a JWE
	// (-require-encrypted-credentials). False, the zero value, uses such a
	// value as it is.
	RequireEncrypted bool
}

// Reasons a credential value is refused, the "outcome" of the
// token_sidecar.credential.decryptions metric and the Reason of a
// *CredentialError. DecryptOK and DecryptPlain are the outcomes of accepted
// values.
const (
	DecryptOK    = "ok"    // a JWE, opened
	DecryptPlain = "plain" // not a JWE, used as it is

	// ReasonNotEncrypted: a plain value while encryption is required.
	ReasonNotEncrypted = "not_encrypted"
	// ReasonMalformed: a JWE whose parts or header cannot be parsed, or
	// that carries a "crit" header.
	ReasonMalformed = "malformed"
	// ReasonAlgorithm: an alg/enc pair that is not listed, or compression
	// ("zip").
	ReasonAlgorithm = "algorithm_not_allowed"
	// ReasonUnknownKID: no kid, or a kid the key set does not hold.
	ReasonUnknownKID = "unknown_kid"
	// ReasonKeyMismatch: the kid names a key of another type than the
	// JWE's alg needs (an RSA key for "dir", say).
	ReasonKeyMismatch = "key_mismatch"
	// ReasonDecryptFailed: the key did not open it — a wrong key under
	// that kid, or a JWE altered in transit. Authenticated encryption
	// cannot tell the two apart.
	ReasonDecryptFailed = "decrypt_failed"
)

// CredentialError is the cause (Error.Err) of an UPSTREAM_INVALID_RESPONSE
// for a credential value that cannot be opened. Its text names the field,
// the kid and the reason, and never holds the value or any part of it.
type CredentialError struct {
	// Field is the member of the Tenant Service answer: "clientSecret" or
	// "accessToken".
	Field string
	// KeyID is the JWE's kid, "" when it has none or is not a JWE.
	KeyID string
	// Reason is one of the Reason… constants.
	Reason string
	// Detail says more in fixed words (the refused algorithm, say); never
	// value text.
	Detail string
}

// PublicDetail is Error: the text is free of secrets by construction, so
// the proxy adds it to the caller's error message.
func (e *CredentialError) PublicDetail() string { return e.Error() }

func (e *CredentialError) Error() string {
	msg := e.Field + " cannot be used"
	if e.Reason != ReasonNotEncrypted {
		msg = fmt.Sprintf("%s JWE (kid %.64q) cannot be opened", e.Field, e.KeyID)
	}
	msg += ": " + e.Reason
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// credentialOpener opens credential values for a TenantClient. It is
// immutable and safe for concurrent use.
type credentialOpener struct {
	cfg         CredentialDecryption
	decryptions metric.Int64Counter
}

var spanAttrKeyID = attribute.Key("token_sidecar.credential.kid")

func newCredentialOpener(cfg CredentialDecryption, mp metric.MeterProvider) (*credentialOpener, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	c, err := mp.Meter(instrumentationName).Int64Counter("token_sidecar.credential.decryptions",
		metric.WithUnit("{value}"),
		metric.WithDescription("Credential values from the Tenant Service by outcome: ok (a JWE, opened), plain (used as it is), or why it was refused (not_encrypted, malformed, algorithm_not_allowed, unknown_kid, key_mismatch, decrypt_failed)."))
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	return &credentialOpener{cfg: cfg, decryptions: c}, nil
}

// open returns the usable value of field: value itself when it is not a
// JWE (and none is required), else the JWE's plaintext in a new slice that
// the caller owns and must wipe. On success with a JWE, value is wiped;
// on an error, the caller still owns value and the error is a
// *CredentialError.
func (o *credentialOpener) open(ctx context.Context, field string, value []byte) ([]byte, error) {
	out, kid, err := o.decrypt(field, value)
	outcome := DecryptOK
	var ce *CredentialError
	switch {
	case errors.As(err, &ce):
		outcome = ce.Reason
	case kid == "" && err == nil:
		outcome = DecryptPlain
	}
	o.decryptions.Add(ctx, 1, metric.WithAttributes(attrOutcome.String(outcome)))
	if kid != "" {
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			// A kid is a name, not a secret, but the Tenant Service chose
			// its length: keep the attribute as short as the messages'.
			span.SetAttributes(spanAttrKeyID.String(strings.ToValidUTF8(kid[:min(len(kid), 64)], "?")))
		}
	}
	if err != nil {
		return nil, err
	}
	if outcome == DecryptOK {
		clear(value)
	}
	return out, nil
}

// decrypt does open's work; value is non-empty. A plain value is returned
// as the same slice with kid ""; an opened JWE always has a kid.
func (o *credentialOpener) decrypt(field string, value []byte) (_ []byte, kid string, _ error) {
	refuse := func(reason, detail string) ([]byte, string, error) {
		return nil, kid, &CredentialError{Field: field, KeyID: kid, Reason: reason, Detail: detail}
	}
	// Whitespace around a JWE is a paste's newline, never part of it.
	jwe := bytes.TrimSpace(value)
	hdr, isJWE := jweHeader(jwe)
	if !isJWE {
		if o.cfg.RequireEncrypted {
			return refuse(ReasonNotEncrypted, "not a JWE, and -require-encrypted-credentials is set")
		}
		return value, "", nil
	}
	kid = hdr.Kid
	allowed := slices.Contains(allowedKeyAlgorithms, jose.KeyAlgorithm(hdr.Alg)) &&
		slices.Contains(allowedContentEncryption, jose.ContentEncryption(hdr.Enc))
	switch {
	case !allowed:
		return refuse(ReasonAlgorithm, fmt.Sprintf("alg %.32q enc %.32q; accepted: dir, RSA-OAEP-256 or ECDH-ES+A256KW with A256GCM", hdr.Alg, hdr.Enc))
	case hdr.Zip != nil:
		// Decompression would leave the compressed plaintext in a buffer
		// nobody wipes, and has a history of CVEs.
		return refuse(ReasonAlgorithm, `compressed ("zip") JWEs are not accepted`)
	case hdr.Crit != nil:
		return refuse(ReasonMalformed, `a "crit" header is not accepted`)
	}
	// The allow-lists again, as go-jose wants them: it checks every header.
	obj, err := jose.ParseEncryptedCompact(string(jwe), allowedKeyAlgorithms, allowedContentEncryption)
	if err != nil {
		// go-jose's parse errors name a part or an algorithm, but a
		// base64 error quotes an offset into the value: keep fixed words.
		return refuse(ReasonMalformed, "not a valid compact JWE")
	}
	if obj.Header.KeyID != kid || obj.Header.Algorithm != hdr.Alg {
		return refuse(ReasonMalformed, "header read twice differently")
	}
	if kid == "" {
		return refuse(ReasonUnknownKID, "the JWE has no kid")
	}
	keys := (*CredentialKeys)(nil)
	if o.cfg.Keys != nil {
		keys = o.cfg.Keys()
	}
	k, ok := keys.lookup(kid)
	if !ok {
		if keys == nil {
			return refuse(ReasonUnknownKID, "no credential keys are configured (-credential-keys-file)")
		}
		return refuse(ReasonUnknownKID, "not in the credential keys file")
	}
	if string(k.alg) != hdr.Alg {
		return refuse(ReasonKeyMismatch, fmt.Sprintf("the JWE is %s, the key serves %s", hdr.Alg, k.alg))
	}
	// Decrypt returns the plaintext in a slice of its own (AES-GCM's Open
	// into a new buffer), which becomes ours to wipe; no "zip" means no
	// second copy.
	plain, err := obj.Decrypt(k.key)
	if err != nil {
		return refuse(ReasonDecryptFailed, "wrong key, or the JWE was altered")
	}
	if len(plain) == 0 {
		return refuse(ReasonDecryptFailed, "the plaintext is empty")
	}
	return plain, kid, nil
}

// jweProtectedHeader are the members of a JWE's protected header the
// sidecar decides on before go-jose parses it.
type jweProtectedHeader struct {
	Alg  string          `json:"alg"`
	Enc  string          `json:"enc"`
	Kid  string          `json:"kid"`
	Zip  json.RawMessage `json:"zip"`
	Crit json.RawMessage `json:"crit"`
}

// jweHeader reports whether value is a JWE in compact serialization — five
// base64url parts, the first a JSON object with "enc" — and returns its
// protected header. Anything else is a plain value: a client secret or
// token never looks like this by accident.
func jweHeader(value []byte) (jweProtectedHeader, bool) {
	var hdr jweProtectedHeader
	if bytes.Count(value, []byte{'.'}) != 4 {
		return hdr, false
	}
	for _, c := range value {
		if !(c == '.' || c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return hdr, false
		}
	}
	first, _, _ := bytes.Cut(value, []byte{'.'})
	raw := make([]byte, base64.RawURLEncoding.DecodedLen(len(first)))
	n, err := base64.RawURLEncoding.Decode(raw, first)
	if err != nil {
		return hdr, false
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(raw[:n], &probe) != nil || probe["enc"] == nil {
		return hdr, false
	}
	// Non-string alg, enc or kid make this a malformed JWE, not a plain
	// value: decode leniently and let the checks refuse it.
	_ = json.Unmarshal(raw[:n], &hdr)
	if hdr.Alg == "" || hdr.Enc == "" {
		hdr.Alg, hdr.Enc = "?", "?"
	}
	return hdr, true
}
