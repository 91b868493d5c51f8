package regions

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// want is regions.md's table, copied by hand so that a typo in the catalogue
// fails here rather than in production.
var want = map[string]string{
	"us-east-1":      "mypurecloud.com",
	"us-east-2":      "use2.us-gov-pure.cloud",
	"us-west-2":      "usw2.pure.cloud",
	"ca-central-1":   "cac1.pure.cloud",
	"sa-east-1":      "sae1.pure.cloud",
	"mx-central-1":   "mxc1.pure.cloud",
	"eu-west-1":      "mypurecloud.ie",
	"eu-west-2":      "euw2.pure.cloud",
	"eu-central-1":   "mypurecloud.de",
	"eu-central-2":   "euc2.pure.cloud",
	"me-central-1":   "mec1.pure.cloud",
	"ap-south-1":     "aps1.pure.cloud",
	"ap-northeast-1": "mypurecloud.jp",
	"ap-northeast-2": "apne2.pure.cloud",
	"ap-northeast-3": "apne3.pure.cloud",
	"ap-southeast-1": "apse1.pure.cloud",
	"ap-southeast-2": "mypurecloud.com.au",
	"eusc-de-east-1": "edee1.eusc-pure.cloud",
}

func TestSeedAcceptance(t *testing.T) {
	r, err := Lookup("ap-south-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.TokenURL(); got != "https://login.aps1.pure.cloud/oauth/token" {
		t.Fatalf("TokenURL = %q", got)
	}
}

func TestEveryRowEverySpelling(t *testing.T) {
	if got := len(All()); got != len(want) {
		t.Fatalf("catalogue has %d regions, regions.md has %d", got, len(want))
	}
	for name, domain := range want {
		spellings := []string{
			name,
			strings.ToUpper(name),
			strings.ReplaceAll(name, "-", "_"),
			strings.ToUpper(strings.ReplaceAll(name, "-", "_")),
			domain,
			strings.ToUpper(domain),
			"  " + name + " ",
		}
		for _, s := range spellings {
			r, err := Lookup(s)
			if err != nil {
				t.Errorf("Lookup(%q): %v", s, err)
				continue
			}
			if r.Name != name || r.Domain != domain {
				t.Errorf("Lookup(%q) = %+v, want %s/%s", s, r, name, domain)
			}
			if got, w := r.TokenURL(), "https://login."+domain+"/oauth/token"; got != w {
				t.Errorf("%s TokenURL = %q, want %q", name, got, w)
			}
			if got, w := r.APIBaseURL(), "https://api."+domain; got != w {
				t.Errorf("%s APIBaseURL = %q, want %q", name, got, w)
			}
		}
	}
}

func TestUnknownRegionListsValidOnes(t *testing.T) {
	for _, in := range []string{"invalid", "", "eu-west-9", "login.mypurecloud.ie", "us-east-1x"} {
		_, err := Lookup(in)
		var ure *UnknownRegionError
		if !errors.As(err, &ure) {
			t.Fatalf("Lookup(%q) error = %v, want *UnknownRegionError", in, err)
		}
		for name := range want {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error for %q does not list %s: %v", in, name, err)
			}
		}
	}
}

func TestAllReturnsACopy(t *testing.T) {
	a := All()
	a[0].Domain = "evil.example"
	if r, _ := Lookup("us-east-1"); r.Domain != "mypurecloud.com" {
		t.Fatal("mutating All() changed the catalogue")
	}
}

// TestUnknownRegionIsNotEchoed: the region comes from the Tenant Service and
// may be anything (a secret put in the wrong field, 900 KB of garbage): the
// error names its length and a fingerprint, never the value.
func TestUnknownRegionIsNotEchoed(t *testing.T) {
	for _, in := range []string{"mars-north-1", "sk-live-" + strings.Repeat("s3cr3t", 3), strings.Repeat("x", 900<<10), "a\"b\n\x00c"} {
		_, err := Lookup(in)
		var ure *UnknownRegionError
		if !errors.As(err, &ure) {
			t.Fatalf("error %v", err)
		}
		msg := err.Error()
		if strings.Contains(msg, in) || len(msg) > 512 {
			t.Errorf("the error echoes the region (%d bytes): %.80q", len(msg), msg)
		}
		sum := sha256.Sum256([]byte(in))
		fp := hex.EncodeToString(sum[:])[:8]
		if ure.Length != len(in) || ure.Fingerprint != fp || !strings.Contains(msg, fmt.Sprintf("%d bytes, sha256 %s", len(in), fp)) {
			t.Errorf("length %d fingerprint %q in %q; want %d and %s", ure.Length, ure.Fingerprint, msg, len(in), fp)
		}
	}
	if a, b := fingerprintOf("eu-west-1x"), fingerprintOf("eu-west-1y"); a == b {
		t.Error("two regions share a fingerprint")
	}
}

func fingerprintOf(s string) string {
	_, err := Lookup(s)
	return err.(*UnknownRegionError).Fingerprint
}
