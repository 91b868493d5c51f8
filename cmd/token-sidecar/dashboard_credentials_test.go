package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/token-sidecar/token-sidecar/internal/testkit"
	"github.com/token-sidecar/token-sidecar/upstream"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// TestDashboardCredentialMetricsExist: the dashboard's panels on encrypted
// credentials query metrics, and group by labels, that /metrics really has
// once a sidecar with a key file has opened a JWE, refused one and seen its
// key file change; and every outcome a panel matches on is one the binary
// can serve.
func TestDashboardCredentialMetricsExist(t *testing.T) {
	exprs := dashboardQueriesWith(t, "token_sidecar_credential_")
	names := metricNames(exprs)
	want := []string{"token_sidecar_credential_decryptions_total", "token_sidecar_credential_keys", "token_sidecar_credential_keys_reloads_total"}
	for _, n := range want {
		if !strings.Contains(strings.Join(names, " "), n) {
			t.Errorf("the dashboard does not query %s (it queries %v)", n, names)
		}
	}

	f := newFakes(t)
	oldKey := upstreamtest.MustEncryptionKey("k-old", upstreamtest.AlgDir)
	newKey := upstreamtest.MustEncryptionKey("k-new", upstreamtest.AlgDir)
	f.addSealedTenant("sealed", oldKey)
	f.addSealedTenant("unknown-kid", newKey)
	dir := t.TempDir()
	env := f.env()
	env["SIDECAR_CREDENTIAL_KEYS_FILE"] = testkit.InstallKeyFile(t, dir, "jwks.json", upstreamtest.JWKSet(oldKey))
	s := startSidecar(t, env, "-credential-keys-poll-interval", "100ms")
	if a := s.token(t, "sealed"); a.Status != http.StatusOK {
		t.Fatalf("sealed: %d %s", a.Status, a.Message)
	}
	if a := s.token(t, "unknown-kid"); a.Status != http.StatusBadGateway {
		t.Fatalf("unknown kid: %d %s", a.Status, a.Message)
	}
	testkit.InstallKeyFile(t, dir, "jwks.json", upstreamtest.JWKSet(oldKey, newKey))
	waitForLog(t, s, `"msg":"credential keys reloaded"`)

	series := servedSeries(t, s)
	for _, n := range names {
		if len(series[n]) == 0 {
			t.Errorf("the dashboard queries %s, which /metrics does not have", n)
		}
	}
	// by (label): each series of the metric has the label.
	by := regexp.MustCompile(`\bby\s*\(([^)]*)\)\s*\(\s*(?:rate\()?\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	for _, e := range exprs {
		for _, m := range by.FindAllStringSubmatch(e, -1) {
			for _, label := range strings.Split(m[1], ",") {
				label = strings.TrimSpace(label)
				for _, sr := range series[m[2]] {
					if !strings.Contains(sr, label+`="`) {
						t.Errorf("%s is grouped by %s, which its series %s lacks", m[2], label, sr)
					}
				}
			}
		}
	}
	// outcome matchers name outcomes the sidecar serves: upstream's, and
	// the key file reloads' ok and error.
	served := map[string]bool{"error": true}
	for _, o := range []string{upstream.DecryptOK, upstream.DecryptPlain, upstream.ReasonNotEncrypted, upstream.ReasonMalformed,
		upstream.ReasonAlgorithm, upstream.ReasonUnknownKID, upstream.ReasonKeyMismatch, upstream.ReasonDecryptFailed} {
		served[o] = true
	}
	matcher := regexp.MustCompile(`outcome\s*(?:=~|!~|=|!=)\s*"([^"]*)"`)
	for _, e := range exprs {
		for _, m := range matcher.FindAllStringSubmatch(e, -1) {
			for _, v := range strings.Split(m[1], "|") {
				if !served[v] {
					t.Errorf("the dashboard matches outcome %q, which the sidecar never serves", v)
				}
			}
		}
	}
	for _, sr := range series["token_sidecar_credential_decryptions_total"] {
		if !strings.Contains(sr, `outcome="ok"`) && !strings.Contains(sr, `outcome="unknown_kid"`) {
			t.Errorf("unexpected decryption series %s", sr)
		}
	}
}

// dashboardQueriesWith are the dashboard's queries that contain part.
func dashboardQueriesWith(t *testing.T, part string) []string {
	t.Helper()
	var exprs []string
	for _, e := range dashboardQueries(t) {
		if strings.Contains(e, part) {
			exprs = append(exprs, e)
		}
	}
	return exprs
}

// servedSeries are the series s serves on /metrics: each metric name with
// the rest of its lines (labels and value).
func servedSeries(t *testing.T, s *sidecar) map[string][]string {
	t.Helper()
	series := map[string][]string{}
	for _, line := range strings.Split(fetchMetrics(t, s), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			series[line[:i]] = append(series[line[:i]], line[i:])
		}
	}
	return series
}
