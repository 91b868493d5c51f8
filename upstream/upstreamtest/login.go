package upstreamtest

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// DefaultExpiresIn is the token lifetime Genesys grants by default (s).
const DefaultExpiresIn = 86399

// Login is a fake Genesys Cloud login host: POST /oauth/token with the
// client-credentials grant, answering as regions.md records Genesys does:
//
//   - 200 {"access_token","token_type":"bearer","expires_in":N}, a fresh
//     random token every time;
//   - 400 invalid_client "client not found" for an unknown client (and a
//     missing or malformed Basic header);
//   - 400 invalid_client "authentication failed" for a wrong secret;
//   - 400 unauthorized_client when the grant is disabled (DisableGrant);
//   - 400 invalid_request for a Content-Type other than
//     application/x-www-form-urlencoded or a missing grant_type, 400
//     unsupported_grant_type for another grant.
//
// The Basic credentials are taken as they are, not form-decoded, as Genesys
// does. Scripts (Script, keyed by the client ID in the Basic header) come
// first. It is safe for concurrent use.
type Login struct {
	*server

	// guarded by server.mu
	clients          map[string]*client
	defaultExpiresIn int
	tokens           map[string]string // access token → client ID
}

type client struct {
	secret        string
	expiresIn     int
	expiresSet    bool // false: the fake's default applies
	grantDisabled bool
}

// NewLogin starts a fake login host on a loopback port. Close it when done.
func NewLogin() *Login {
	l := &Login{
		clients:          map[string]*client{},
		defaultExpiresIn: DefaultExpiresIn,
		tokens:           map[string]string{},
	}
	l.server = newServer(l.serveHTTP)
	return l
}

// AddClient registers (or re-registers, resetting its settings) an OAuth
// client.
func (l *Login) AddClient(clientID, secret string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.clients[clientID] = &client{secret: secret}
}

// SetExpiresIn sets the expires_in of the client's tokens. Any value is
// sent as is, so ≤ 0 tests the sidecar's validation.
func (l *Login) SetExpiresIn(clientID string, seconds int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.clients[clientID]; ok {
		c.expiresIn, c.expiresSet = seconds, true
	}
}

// SetDefaultExpiresIn sets expires_in for clients without their own
// (DefaultExpiresIn until then).
func (l *Login) SetDefaultExpiresIn(seconds int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.defaultExpiresIn = seconds
}

// DisableGrant makes the client's requests fail with unauthorized_client.
func (l *Login) DisableGrant(clientID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.clients[clientID]; ok {
		c.grantDisabled = true
	}
}

// Script queues steps for requests authenticating as clientID (whatever
// the secret); each request consumes one, before the normal answer.
func (l *Login) Script(clientID string, steps ...Step) { l.script(clientID, steps) }

// ClearScript drops the steps still queued for clientID (see
// TenantService.ClearScript).
func (l *Login) ClearScript(clientID string) { l.clearScript(clientID) }

// Calls is the number of token requests whose Basic header named clientID.
func (l *Login) Calls(clientID string) int { return l.count(clientID) }

// ClientOf returns the client an access token was issued to, "" if the
// fake never issued it or it was revoked.
func (l *Login) ClientOf(accessToken string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tokens[accessToken]
}

// Revoke forgets an access token, so that the fake API answers 401 to it,
// as Genesys does for an expired or revoked token.
func (l *Login) Revoke(accessToken string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.tokens, accessToken)
}

// IssuedTokens returns every token issued and not revoked, in no order:
// for tests that scan what a client wrote for them.
func (l *Login) IssuedTokens() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.tokens))
	for tok := range l.tokens {
		out = append(out, tok)
	}
	return out
}

// Issued is the number of tokens issued and not revoked.
func (l *Login) Issued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.tokens)
}

func (l *Login) serveHTTP(w http.ResponseWriter, r *http.Request) {
	id, secret, authOK := parseBasic(r.Header.Get("Authorization"))
	form := l.record(r, id)
	switch {
	case r.URL.Path != "/oauth/token":
		write(w, jsonReply(http.StatusNotFound, []byte(`{"error":"not found"}`)))
		return
	case r.Method != http.MethodPost:
		write(w, jsonReply(http.StatusMethodNotAllowed, []byte(`{"error":"method not allowed"}`)))
		return
	}
	l.answer(w, r, l.nextStep(id), func() reply { return l.normal(r, id, secret, authOK, form) })
}

// parseBasic decodes "Basic base64(id:secret)" without form-decoding.
func parseBasic(h string) (id, secret string, ok bool) {
	const prefix = "basic "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[len(prefix):]))
	if err != nil {
		return "", "", false
	}
	id, secret, ok = strings.Cut(string(raw), ":")
	return id, secret, ok
}

func (l *Login) normal(r *http.Request, id, secret string, authOK bool, form []byte) reply {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, known := l.clients[id]
	switch {
	case !authOK || !known:
		return jsonReply(http.StatusBadRequest, oauthErrorBody("invalid_client", "client not found"))
	case subtle.ConstantTimeCompare([]byte(secret), []byte(c.secret)) != 1:
		return jsonReply(http.StatusBadRequest, oauthErrorBody("invalid_client", "authentication failed"))
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return jsonReply(http.StatusBadRequest, oauthErrorBody("invalid_request", "content type must be application/x-www-form-urlencoded"))
	}
	values, err := url.ParseQuery(string(form))
	switch grant := values.Get("grant_type"); {
	case err != nil || grant == "":
		return jsonReply(http.StatusBadRequest, oauthErrorBody("invalid_request", "missing grant_type"))
	case grant != "client_credentials":
		return jsonReply(http.StatusBadRequest, oauthErrorBody("unsupported_grant_type", "grant type not supported"))
	case c.grantDisabled:
		return jsonReply(http.StatusBadRequest, oauthErrorBody("unauthorized_client", "client is not authorized to use the client_credential grant type"))
	}
	expiresIn := l.defaultExpiresIn
	if c.expiresSet {
		expiresIn = c.expiresIn
	}
	token := randomString(32)
	l.tokens[token] = id
	b, _ := json.Marshal(map[string]any{"access_token": token, "token_type": "bearer", "expires_in": expiresIn})
	rep := jsonReply(http.StatusOK, b)
	rep.secretLine = "access_token " + token
	return rep
}
