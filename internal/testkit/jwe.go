package testkit

import (
	"encoding/base64"
	"strings"
)

// TamperJWE flips one bit in part i of a compact JWE (0 header, 1 wrapped
// key, 2 IV, 3 ciphertext, 4 tag), keeping it base64url. It panics when
// that part is empty or not base64url: a seed corpus has no t to fail.
func TamperJWE(jwe string, part int) string {
	parts := strings.Split(jwe, ".")
	if part >= len(parts) {
		panic("testkit: TamperJWE: no such part")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[part])
	if err != nil || len(b) == 0 {
		panic("testkit: TamperJWE: cannot tamper with that part")
	}
	b[len(b)/2] ^= 0x01
	parts[part] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}
