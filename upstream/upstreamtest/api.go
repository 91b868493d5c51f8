package upstreamtest

import (
	"encoding/json"
	"net/http"
	"strings"
)

// API is a minimal fake Genesys Platform API for the sidecar's proxy: any
// method and path; a request whose Authorization is "Bearer <token>" for a
// token login issued and did not revoke gets 200 with a JSON echo of the
// method, path and query, anything else 401 as Genesys answers an expired
// token. Scripts (Script) come first. It is safe for concurrent use.
type API struct {
	*server
	login *Login
}

// NewAPI starts a fake API that accepts the tokens login issues. Close it
// when done.
func NewAPI(login *Login) *API {
	a := &API{login: login}
	a.server = newServer(a.serveHTTP)
	return a
}

// Script queues steps for the next requests, whatever their path.
func (a *API) Script(steps ...Step) { a.script("", steps) }

func (a *API) serveHTTP(w http.ResponseWriter, r *http.Request) {
	a.record(r, "")
	a.answer(w, r, a.nextStep(""), func() reply {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || a.login == nil || a.login.ClientOf(token) == "" {
			return jsonReply(http.StatusUnauthorized, []byte(`{"message":"Invalid login credentials.","code":"bad.credentials","status":401}`))
		}
		b, _ := json.Marshal(map[string]string{"method": r.Method, "path": r.URL.EscapedPath(), "query": r.URL.RawQuery})
		return jsonReply(http.StatusOK, b)
	})
}
