// Package regions is the catalogue of Genesys Cloud regions: which environment
// domain serves each region, and the login and API hosts derived from it.
//
// It is a leaf: pure data and the standard library only. It must not import any
// other package of this module.
package regions

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// Region is one Genesys Cloud region. Every official Genesys client derives the
// hosts of a region from its environment domain D: login.D and api.D.
type Region struct {
	// Name is the AWS-style region name, e.g. "eu-west-1".
	Name string
	// Domain is the environment domain, e.g. "mypurecloud.ie".
	Domain string
}

// LoginBaseURL is the base of the region's login host, e.g.
// "https://login.mypurecloud.ie".
func (r Region) LoginBaseURL() string { return "https://login." + r.Domain }

// TokenURL is the region's OAuth token endpoint, e.g.
// "https://login.aps1.pure.cloud/oauth/token".
func (r Region) TokenURL() string { return r.LoginBaseURL() + "/oauth/token" }

// APIBaseURL is the base of the region's Platform API host, e.g.
// "https://api.mypurecloud.ie".
func (r Region) APIBaseURL() string { return "https://api." + r.Domain }

// catalogue holds every verified region (see shared/docs/regions.md). It is
// never modified; All returns a copy.
var catalogue = [...]Region{
	{"us-east-1", "mypurecloud.com"},
	{"us-east-2", "use2.us-gov-pure.cloud"},
	{"us-west-2", "usw2.pure.cloud"},
	{"ca-central-1", "cac1.pure.cloud"},
	{"sa-east-1", "sae1.pure.cloud"},
	{"mx-central-1", "mxc1.pure.cloud"},
	{"eu-west-1", "mypurecloud.ie"},
	{"eu-west-2", "euw2.pure.cloud"},
	{"eu-central-1", "mypurecloud.de"},
	{"eu-central-2", "euc2.pure.cloud"},
	{"me-central-1", "mec1.pure.cloud"},
	{"ap-south-1", "aps1.pure.cloud"},
	{"ap-northeast-1", "mypurecloud.jp"},
	{"ap-northeast-2", "apne2.pure.cloud"},
	{"ap-northeast-3", "apne3.pure.cloud"},
	{"ap-southeast-1", "apse1.pure.cloud"},
	{"ap-southeast-2", "mypurecloud.com.au"},
	{"eusc-de-east-1", "edee1.eusc-pure.cloud"},
}

// All returns every known region, in catalogue order. The caller owns the
// returned slice.
func All() []Region {
	out := make([]Region, len(catalogue))
	copy(out[:], catalogue[:])
	return out
}

// Names returns the AWS-style names of every known region, sorted.
func Names() []string {
	names := make([]string, len(catalogue))
	for i, r := range catalogue {
		names[i] = r.Name
	}
	sort.Strings(names)
	return names
}

// UnknownRegionError reports a region that is not in the catalogue. Its
// message lists the valid region names, so that a misconfiguration can be
// fixed from the log line alone, but never the value looked up: it comes
// from the Tenant Service and may be anything — a secret put in the wrong
// field, or a megabyte of garbage. The message names its length and a
// fingerprint instead, which an operator can compare with what the Tenant
// Service holds (printf %s "$region" | sha256sum | cut -c1-8).
type UnknownRegionError struct {
	// Length is the value's length in bytes.
	Length int
	// Fingerprint is the first 8 hex digits of the value's SHA-256.
	Fingerprint string
}

func (e *UnknownRegionError) Error() string {
	return fmt.Sprintf("unknown Genesys Cloud region (%d bytes, sha256 %s); valid regions: %s",
		e.Length, e.Fingerprint, strings.Join(Names(), ", "))
}

// newUnknownRegionError describes s without holding it.
func newUnknownRegionError(s string) *UnknownRegionError {
	sum := sha256.Sum256([]byte(s))
	return &UnknownRegionError{Length: len(s), Fingerprint: hex.EncodeToString(sum[:4])}
}

// Lookup finds a region by its AWS-style name ("eu-west-1"), the underscore
// spelling some Genesys tools use ("eu_west_1") or its environment domain
// ("mypurecloud.ie"), ignoring case and surrounding spaces. An unknown value
// gives an *UnknownRegionError.
func Lookup(s string) (Region, error) {
	key := strings.ToLower(strings.TrimSpace(s))
	key = strings.ReplaceAll(key, "_", "-")
	for _, r := range catalogue {
		if key == r.Name || key == r.Domain {
			return r, nil
		}
	}
	return Region{}, newUnknownRegionError(s)
}
