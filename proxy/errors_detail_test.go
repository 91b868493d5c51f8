package proxy

import (
	"fmt"
	"strings"
	"testing"
)

// detailedError is a cause that vouches for a detail safe to show.
type detailedError struct{ codedError }

func (e *detailedError) PublicDetail() string {
	return `clientSecret JWE (kid "k1") cannot be opened: unknown_kid`
}

// TestClassifyAddsAPublicDetail: a cause's PublicDetail joins the message;
// its Error text (which may hold anything) never does.
func TestClassifyAddsAPublicDetail(t *testing.T) {
	t.Parallel()
	err := &apiError{tenant: "acme", provider: "genesys",
		err: fmt.Errorf("cache: %w", &detailedError{codedError{code: codeUpstreamInvalidResponse}})}
	p := classify(err)
	want := `an upstream service gave an invalid answer (tenant acme, provider genesys): clientSecret JWE (kid "k1") cannot be opened: unknown_kid`
	if p.status != 502 || p.message != want {
		t.Errorf("got %d %q, want 502 %q", p.status, p.message, want)
	}
	if strings.Contains(p.message, "s3cr3t") {
		t.Errorf("message %q holds the cause's text", p.message)
	}
	if p := classify(&apiError{err: &codedError{code: codeUpstreamInvalidResponse}}); strings.Contains(p.message, ":") {
		t.Errorf("a cause without a detail changed the message: %q", p.message)
	}
}
