package proxy

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// tenantIDPattern is the contract's definition of a valid tenant ID, the
// reference the hand-written ValidTenantID is checked against.
var tenantIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func TestValidTenantID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"Z", true},
		{"0", true},
		{"acme", true},
		{"acme-corp_eu.1", true},
		{"a..", true}, // not a dot-segment
		{"a-", true},
		{"9_", true},
		{strings.Repeat("a", 128), true},
		{"a" + strings.Repeat("-", 127), true},
		{"", false},
		{strings.Repeat("a", 129), false},
		{".", false},
		{"..", false},
		{".a", false},
		{"-a", false},
		{"_a", false},
		{"a/b", false},
		{"a\\b", false},
		{"a b", false},
		{" a", false},
		{"a\n", false}, // $ is the end of the text, not of a line
		{"a\x00", false},
		{"a\x7f", false},
		{"a%2e", false},
		{"a:b", false},
		{"a+b", false},
		{"é", false},
		{"aé", false},
		{"a\u212a", false}, // Kelvin sign: folds to k, still not ASCII
		{"ａ", false},       // fullwidth a
	} {
		if got := ValidTenantID(tc.id); got != tc.want {
			t.Errorf("ValidTenantID(%q) = %v, want %v", tc.id, got, tc.want)
		}
		if ref := tenantIDPattern.MatchString(tc.id); ref != tc.want {
			t.Errorf("the table disagrees with the contract's pattern on %q", tc.id)
		}
	}
}

func FuzzValidTenantID(f *testing.F) {
	for _, s := range []string{"acme", "", "..", "a/b", strings.Repeat("a", 128), strings.Repeat("b", 129), "a\n", "é", "A_b.c-9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidTenantID(s), tenantIDPattern.MatchString(s); got != want {
			t.Errorf("ValidTenantID(%q) = %v, pattern says %v", s, got, want)
		}
	})
}

func BenchmarkValidTenantID(b *testing.B) {
	id := "acme-corp_eu.1"
	b.ReportAllocs()
	for b.Loop() {
		if !ValidTenantID(id) {
			b.Fatal("invalid")
		}
	}
}

// TestTokenQueryParam: the tenant parameter as parseTokenQuery reads it.
func TestTokenQueryParam(t *testing.T) {
	for _, tc := range []struct {
		raw       string
		wantValue string
		wantFound bool
		wantErr   error // errRepeated, errAny or nil
	}{
		{"", "", false, nil},
		{"tenant=acme", "acme", true, nil},
		{"a=1&tenant=acme&b=2", "acme", true, nil},
		{"tenant=", "", true, nil},
		{"tenant", "", true, nil},
		{"tenants=acme", "", false, nil},
		{"xtenant=acme", "", false, nil},
		{"tenant=a%20b", "a b", true, nil},
		{"tenant=a+b", "a b", true, nil},
		{"%74enant=acme", "acme", true, nil},
		{"tenant=a=b", "a=b", true, nil},
		{"&&tenant=acme&&", "acme", true, nil},
		{"%zz=1&tenant=acme", "acme", true, nil},
		{"x=%zz&tenant=acme", "acme", true, nil},
		{"tenant=%zz", "", true, errAny},
		{"tenant=a&tenant=b", "", true, errRepeated},
		{"tenant=a&%74enant=a", "", true, errRepeated},
	} {
		value, found, err := parseTokenQuery(tc.raw).tenant.value()
		if value != tc.wantValue || found != tc.wantFound || !matchErr(err, tc.wantErr) {
			t.Errorf("tenant of %q = %q, %v, %v; want %q, %v, %v", tc.raw, value, found, err, tc.wantValue, tc.wantFound, tc.wantErr)
		}
		// Where the query is unambiguous, url.Values agrees.
		if tc.wantErr == nil {
			q, _ := url.ParseQuery(tc.raw)
			if _, ok := q["tenant"]; ok != found || q.Get("tenant") != value {
				t.Errorf("tenant of %q = %q, %v; url.Values says %q, %v", tc.raw, value, found, q.Get("tenant"), ok)
			}
		}
	}
}

var errAny = errors.New("any error")

func matchErr(err, want error) bool {
	switch want {
	case nil:
		return err == nil
	case errAny:
		return err != nil && !errors.Is(err, errRepeated)
	}
	return errors.Is(err, want)
}

func TestTokenQueryDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if v, _, _ := parseTokenQuery("tenant=acme&provider=genesys").provider.value(); v != "genesys" {
			t.Fatal(v)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
}
