package upstream

import (
	"encoding/base64"
	"errors"
	"log/slog"
	"unicode/utf16"
	"unicode/utf8"
)

// Credentials are a tenant's Genesys OAuth client, as the Tenant Service
// returns them for provider "genesys".
//
// The client secret is held as bytes so that it can be overwritten: call Wipe
// as soon as the exchange is done (Pipeline does, on success and failure).
// This is best effort — the Tenant Service answer passed through transport
// buffers, and the Authorization header value is a Go string, neither of
// which can be zeroed — but it keeps the secret's lifetime in our own memory
// to one exchange.
//
// Formatting or logging a *Credentials prints a redacted form. A Credentials
// is not safe for concurrent use with Wipe.
type Credentials struct {
	// Tenant is the tenant the credentials belong to; used in log lines.
	Tenant string
	// ClientID is the OAuth client ID. Not a password, but never logged.
	ClientID string
	// ClientSecret is the OAuth client secret. Never log or copy it.
	ClientSecret []byte
	// Region is the Genesys region as the Tenant Service spelled it; see
	// regions.Lookup.
	Region string
}

// Wipe overwrites the client secret with zeros and drops the references to
// the secret and the client ID. It is safe on a nil *Credentials and safe to
// call more than once.
func (c *Credentials) Wipe() {
	if c == nil {
		return
	}
	clear(c.ClientSecret)
	c.ClientSecret = nil
	c.ClientID = ""
}

// String redacts the client ID and secret.
func (c *Credentials) String() string {
	if c == nil {
		return "<nil>"
	}
	return "upstream.Credentials{Tenant:" + c.Tenant + " Region:" + c.Region + " ClientID:[redacted] ClientSecret:[redacted]}"
}

// GoString redacts too, so that %#v does not bypass String.
func (c *Credentials) GoString() string { return c.String() }

// LogValue keeps the client ID and secret out of slog output even when a
// *Credentials is logged by mistake.
func (c *Credentials) LogValue() slog.Value {
	if c == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.String("tenant", c.Tenant), regionAttr(c.Region))
}

// basicAuthorization builds "Basic base64(id:secret)" from the secret bytes,
// zeroing its temporary buffers. The id and secret are not form-encoded
// first: RFC 6749 §2.3.1 says they should be, but Genesys and its SDKs use
// them as they are, so an id or secret with reserved characters only works
// this way. The returned string itself cannot be wiped.
func basicAuthorization(clientID string, secret []byte) string {
	const prefix = "Basic "
	raw := make([]byte, 0, len(clientID)+1+len(secret))
	raw = append(raw, clientID...)
	raw = append(raw, ':')
	raw = append(raw, secret...)
	out := make([]byte, len(prefix)+base64.StdEncoding.EncodedLen(len(raw)))
	copy(out, prefix)
	base64.StdEncoding.Encode(out[len(prefix):], raw)
	h := string(out)
	clear(raw)
	clear(out)
	return h
}

// secretBytes decodes a JSON string straight into bytes that can be wiped,
// without passing through an immutable Go string.
type secretBytes []byte

var errSecretNotString = errors.New("secret is not a JSON string")

// UnmarshalJSON decodes a JSON string (with its escapes) into fresh bytes.
// null leaves the value empty. A repeated key wipes the earlier value.
func (s *secretBytes) UnmarshalJSON(data []byte) error {
	clear(*s)
	*s = nil
	if string(data) == "null" {
		return nil
	}
	out, ok := unquoteJSONBytes(data)
	if !ok {
		return errSecretNotString
	}
	*s = out
	return nil
}

// unquoteJSONBytes decodes a JSON string literal, quotes included, into a
// new slice. It handles every escape of RFC 8259, including surrogate pairs;
// invalid UTF-8 and lone surrogates become U+FFFD as encoding/json does.
func unquoteJSONBytes(data []byte) ([]byte, bool) {
	if len(data) < 2 || data[0] != '"' || data[len(data)-1] != '"' {
		return nil, false
	}
	in := data[1 : len(data)-1]
	// 3×: the worst case (each invalid byte becomes a 3-byte U+FFFD), so the
	// buffer never grows and never leaves a partial copy behind.
	out := make([]byte, 0, 3*len(in))
	for i := 0; i < len(in); {
		c := in[i]
		switch {
		case c == '\\':
			if i+1 >= len(in) {
				clear(out)
				return nil, false
			}
			e := in[i+1]
			i += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := hex4(in[i:])
				if !ok {
					clear(out)
					return nil, false
				}
				i += 4
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if i+6 <= len(in) && in[i] == '\\' && in[i+1] == 'u' {
						if v, ok := hex4(in[i+2:]); ok {
							r2 = v
						}
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				out = utf8.AppendRune(out, r)
			default:
				clear(out)
				return nil, false
			}
		case c < 0x20 || c == '"':
			clear(out)
			return nil, false
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(in[i:])
			out = utf8.AppendRune(out, r)
			i += size
		}
	}
	return out, true
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
