package upstream

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// BenchmarkGenesysCredentials is the Tenant Service half of a miss, in
// process (no sockets): parse the answer and, for a JWE, open it. The
// difference to "plain" is the decrypt cost per miss.
func BenchmarkGenesysCredentials(b *testing.B) {
	keys := testKeys()
	ks := allTestKeys(b)
	const secret = "s3cr3t-0123456789abcdefghijklmnopqrstuvwxyz"
	cases := []struct{ name, value string }{{"plain", secret}}
	for _, alg := range []string{upstreamtest.AlgDir, upstreamtest.AlgRSAOAEP256, upstreamtest.AlgECDHESA256KW} {
		cases = append(cases, struct{ name, value string }{alg, keys[alg].MustEncrypt(secret)})
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			body, _ := json.Marshal(map[string]string{"clientId": "id", "clientSecret": c.value, "region": "eu-west-1"})
			tc, err := NewTenantClient(TenantClientConfig{
				BaseURL:    "http://tenant-service.invalid",
				Decryption: CredentialDecryption{Keys: staticKeys(ks)},
				CallConfig: CallConfig{HTTPClient: &http.Client{Transport: bodyTransport{status: 200, body: body}}, MaxRetries: -1},
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				creds, err := tc.GenesysCredentials(ctx, "acme")
				if err != nil || len(creds.ClientSecret) != len(secret) {
					b.Fatal(err)
				}
				creds.Wipe()
			}
		})
	}
}
