package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// seenRequest is what the fake Genesys API received.
type seenRequest struct {
	Method     string
	RequestURI string
	Header     http.Header
	Token      string // the bearer token
	Client     string // the OAuth client the token was issued to; "" if unknown
	BodyLen    int
	BodySHA    string
	Seq        int // 1 for the API's first request
}

// genesysAPI is an in-test fake Genesys Platform API. A bearer token is good
// when the fake login issued it, has not revoked it and its client is not
// refused; any other gets 401 as Genesys answers. A good request gets 200
// and a JSON echo of what was received. Paths under /slow-stream/N answer
// N pieces one second apart. The first body byte of any request is reported
// on firstByte.
type genesysAPI struct {
	srv       *httptest.Server
	login     *upstreamtest.Login
	firstByte chan struct{}

	mu      sync.Mutex
	seen    []seenRequest
	refused map[string]bool // client IDs
}

func newGenesysAPI(t *testing.T, login *upstreamtest.Login) *genesysAPI {
	t.Helper()
	a := &genesysAPI{login: login, firstByte: make(chan struct{}, 1), refused: map[string]bool{}}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serveHTTP))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *genesysAPI) refuse(clientID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refused[clientID] = true
}

func (a *genesysAPI) requests() []seenRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]seenRequest(nil), a.seen...)
}

func (a *genesysAPI) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	var n int64
	buf := make([]byte, 32<<10)
	for {
		k, err := r.Body.Read(buf)
		if k > 0 {
			if n == 0 {
				select {
				case a.firstByte <- struct{}{}:
				default:
				}
			}
			n += int64(k)
			h.Write(buf[:k])
		}
		if err != nil {
			break
		}
	}
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	client := a.login.ClientOf(token)
	a.mu.Lock()
	s := seenRequest{
		Method: r.Method, RequestURI: r.RequestURI, Header: r.Header.Clone(), Token: token, Client: client,
		BodyLen: int(n), BodySHA: hex.EncodeToString(h.Sum(nil)), Seq: len(a.seen) + 1,
	}
	a.seen = append(a.seen, s)
	refused := client == "" || a.refused[client]
	a.mu.Unlock()

	w.Header().Set("X-Api-Seq", strconv.Itoa(s.Seq))
	if refused {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"message":"Invalid login credentials.","code":"bad.credentials","status":401}`)
		return
	}
	if pieces, ok := strings.CutPrefix(r.URL.Path, "/slow-stream/"); ok {
		count, _ := strconv.Atoi(pieces)
		w.Header().Set("Content-Type", "text/plain")
		for i := range count {
			if i > 0 {
				time.Sleep(time.Second)
			}
			fmt.Fprintf(w, "piece %d\n", i)
			http.NewResponseController(w).Flush()
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Api-Answer", "yes")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(map[string]any{"method": s.Method, "uri": s.RequestURI, "bodySha": s.BodySHA, "seq": s.Seq})
}

// proxyEnv is the fakes' environment plus the API URL override.
func proxyEnv(f *fakes, api *genesysAPI) map[string]string {
	env := f.env()
	env["SIDECAR_GENESYS_API_URL"] = api.srv.URL
	return env
}

// proxied sends a request through the sidecar's /proxy/ with the
// X-Token-Request header and returns the answer with its body.
func proxied(t *testing.T, method, url string, body io.Reader, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Token-Request", "true")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	return resp, b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestAPIProxyForwardsWithTheTenantsToken(t *testing.T) {
	f := newFakes(t)
	acme := f.addTenant("acme")
	f.addTenant("dflt")
	api := newGenesysAPI(t, f.login)
	s := startSidecar(t, proxyEnv(f, api), "-default-tenant", "dflt")

	const target = "/api/v2/conversations/a%2Fb/messages?pageSize=25&q=x%20y&tenant=dflt&semi=a;b"
	body := []byte(`{"text":"hello"}`)
	header := http.Header{
		"X-Tenant-Id":   {"acme"},
		"Authorization": {"Bearer app-made-this-up"},
		"Content-Type":  {"application/json"},
		"X-Custom":      {"kept"},
		"Connection":    {"X-Hop"},
		"X-Hop":         {"dropped"},
	}
	resp, answer := proxied(t, http.MethodPost, s.tokenURL+"/proxy"+target, bytes.NewReader(body), header)

	if resp.StatusCode != 200 || resp.Header.Get("X-Api-Answer") != "yes" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("answer %d %v %s; want the API's 200 unchanged", resp.StatusCode, resp.Header, answer)
	}
	reqs := api.requests()
	if len(reqs) != 1 {
		t.Fatalf("API got %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if !bytes.Contains(answer, []byte(`"seq":1`)) || !bytes.Contains(answer, []byte(got.BodySHA)) {
		t.Errorf("answer %s is not the API's", answer)
	}
	current := s.token(t, "acme").AccessToken
	if got.Token != current || got.Client != acme {
		t.Errorf("API got a token of client %q, equal to acme's current token: %v", got.Client, got.Token == current)
	}
	if got.Method != http.MethodPost || got.RequestURI != target || got.BodySHA != sha(body) {
		t.Errorf("API got %s %s (body %d bytes); want POST %s with the body", got.Method, got.RequestURI, got.BodyLen, target)
	}
	for _, h := range []string{"X-Token-Request", "X-Tenant-Id", "X-Hop"} {
		if v, ok := got.Header[h]; ok {
			t.Errorf("header %s forwarded: %q", h, v)
		}
	}
	if got.Header.Get("X-Custom") != "kept" || got.Header.Get("Content-Type") != "application/json" {
		t.Errorf("the app's headers were not forwarded: %v", got.Header)
	}

	// Methods and bodies, with a warm cache: no Tenant Service call, no
	// exchange, only the API requests.
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions} {
		var b []byte
		if m != http.MethodGet && m != http.MethodHead {
			b = []byte("body of " + m)
		}
		resp, _ := proxied(t, m, s.tokenURL+"/proxy/api/v2/things/7?x=1", bytes.NewReader(b), http.Header{"X-Tenant-Id": {"acme"}})
		reqs := api.requests()
		last := reqs[len(reqs)-1]
		if resp.StatusCode != 200 || last.Method != m || last.RequestURI != "/api/v2/things/7?x=1" || last.BodySHA != sha(b) || last.Token != current {
			t.Errorf("%s: status %d; API got %s %s body %d bytes", m, resp.StatusCode, last.Method, last.RequestURI, last.BodyLen)
		}
	}
	if ts, ex := f.ts.Calls("acme", "genesys"), f.login.Calls(acme); ts != 1 || ex != 1 {
		t.Errorf("Tenant Service calls %d, exchanges %d; want 1 and 1 (warm cache)", ts, ex)
	}

	// Without X-Tenant-ID the default tenant is used, never ?tenant=.
	proxied(t, http.MethodGet, s.tokenURL+"/proxy/api/v2/users/me?tenant=acme", nil, nil)
	reqs = api.requests()
	if last := reqs[len(reqs)-1]; last.Client != "client-dflt" || last.RequestURI != "/api/v2/users/me?tenant=acme" {
		t.Errorf("without X-Tenant-ID: token of %q for %s; want the default tenant's, query unchanged", last.Client, last.RequestURI)
	}
}

func TestAPIProxyRetriesOnceAfterA401(t *testing.T) {
	f := newFakes(t)
	acme := f.addTenant("acme")
	beta := f.addTenant("beta")
	api := newGenesysAPI(t, f.login)
	s := startSidecar(t, proxyEnv(f, api))
	acmeH := http.Header{"X-Tenant-Id": {"acme"}}

	if resp, _ := proxied(t, http.MethodGet, s.tokenURL+"/proxy/api/v2/users/me", nil, acmeH); resp.StatusCode != 200 {
		t.Fatalf("first call: %d", resp.StatusCode)
	}
	first := api.requests()[0].Token
	// Genesys refuses the token from now on (revoked, or expired early).
	f.login.Revoke(first)

	body := []byte(`{"state":"available"}`)
	resp, answer := proxied(t, http.MethodPut, s.tokenURL+"/proxy/api/v2/users/me/presence?src=app", bytes.NewReader(body), acmeH)

	reqs := api.requests()[1:]
	if len(reqs) != 2 {
		t.Fatalf("API got %d requests for the call, want 2 (the 401 and one retry)", len(reqs))
	}
	if resp.StatusCode != 200 || resp.Header.Get("X-Api-Seq") != "3" || !bytes.Contains(answer, []byte(`"seq":3`)) {
		t.Fatalf("app got %d (seq %s) %s; want the retried answer", resp.StatusCode, resp.Header.Get("X-Api-Seq"), answer)
	}
	if n := f.login.Calls(acme); n != 2 {
		t.Errorf("exchanges = %d, want 2: exactly one for the 401", n)
	}
	current := s.token(t, "acme").AccessToken
	if reqs[0].Token != first || reqs[1].Token != current || current == first {
		t.Errorf("attempts used the refused token then the current one: %v %v", reqs[0].Token == first, reqs[1].Token == current)
	}
	for i, r := range reqs {
		if r.Method != http.MethodPut || r.RequestURI != "/api/v2/users/me/presence?src=app" || r.BodySHA != sha(body) {
			t.Errorf("attempt %d: %s %s body %d bytes; want the app's request", i+1, r.Method, r.RequestURI, r.BodyLen)
		}
	}

	// A second 401 goes back to the app: one refresh, one retry, no loop.
	betaH := http.Header{"X-Tenant-Id": {"beta"}}
	proxied(t, http.MethodGet, s.tokenURL+"/proxy/api/v2/users/me", nil, betaH)
	api.refuse(beta)
	before := len(api.requests())
	resp, answer = proxied(t, http.MethodGet, s.tokenURL+"/proxy/api/v2/users/me", nil, betaH)
	if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(answer, []byte("bad.credentials")) {
		t.Fatalf("app got %d %s; want the API's second 401", resp.StatusCode, answer)
	}
	if n := len(api.requests()) - before; n != 2 {
		t.Errorf("API got %d requests, want 2", n)
	}
	if n := f.login.Calls(beta); n != 2 {
		t.Errorf("beta exchanges = %d, want 2", n)
	}
	// Inside -min-refresh-interval the forced refresh gives back the token
	// just refused: no retry, no exchange.
	before = len(api.requests())
	if resp, _ := proxied(t, http.MethodGet, s.tokenURL+"/proxy/api/v2/users/me", nil, betaH); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("rate-limited: app got %d, want 401", resp.StatusCode)
	}
	if n, ex := len(api.requests())-before, f.login.Calls(beta); n != 1 || ex != 2 {
		t.Errorf("rate-limited: API requests %d, exchanges %d; want 1 and still 2", n, ex)
	}

	logs := s.stderr.String()
	if !strings.Contains(logs, `"msg":"api request proxied"`) || !strings.Contains(logs, `"retried":true`) || !strings.Contains(logs, `"route":"/proxy/*"`) {
		t.Errorf("no info line for the retried request:\n%s", logs)
	}
	for _, secret := range []string{first, current, "src=app", "Bearer"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
}

func TestAPIProxyStreamsLargeBodiesAndDoesNotRetryThem(t *testing.T) {
	f := newFakes(t)
	acme := f.addTenant("acme")
	api := newGenesysAPI(t, f.login)
	s := startSidecar(t, proxyEnv(f, api))
	acmeH := http.Header{"X-Tenant-Id": {"acme"}}
	proxied(t, http.MethodGet, s.tokenURL+"/proxy/warm-up", nil, acmeH)

	// 3 MiB, announced: the app sends 64 KiB and then waits until the API
	// has seen its first bytes. A sidecar that buffered the body before
	// forwarding it would wait for the rest for ever.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16)
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(payload[:64<<10])
		select {
		case <-api.firstByte:
			_, _ = pw.Write(payload[64<<10:])
			pw.Close()
		case <-time.After(10 * time.Second):
			pw.CloseWithError(fmt.Errorf("the API saw no byte of the body before the app finished sending it"))
		}
	}()
	req, _ := http.NewRequest(http.MethodPost, s.tokenURL+"/proxy/api/v2/uploads", pr)
	req.ContentLength = int64(len(payload))
	req.Header.Set("X-Token-Request", "true")
	req.Header.Set("X-Tenant-ID", "acme")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("streamed upload: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	reqs := api.requests()
	last := reqs[len(reqs)-1]
	if resp.StatusCode != 200 || last.BodyLen != len(payload) || last.BodySHA != sha(payload) {
		t.Fatalf("status %d; API got %d bytes; want 200 and the %d bytes sent", resp.StatusCode, last.BodyLen, len(payload))
	}

	// Over 1 MiB, a 401 is not retried: the body was not kept.
	api.refuse(acme)
	big := payload[:3<<19] // 1.5 MiB
	before := len(api.requests())
	resp2, answer := proxied(t, http.MethodPost, s.tokenURL+"/proxy/api/v2/uploads", bytes.NewReader(big), acmeH)
	if resp2.StatusCode != http.StatusUnauthorized || !bytes.Contains(answer, []byte("bad.credentials")) {
		t.Fatalf("app got %d %s; want the API's 401", resp2.StatusCode, answer)
	}
	reqs = api.requests()[before:]
	if len(reqs) != 1 || reqs[0].BodySHA != sha(big) {
		t.Fatalf("API got %d requests for the large body, want 1 with the whole body", len(reqs))
	}
}

func TestAPIProxyErrorsAreTheTokenAPIs(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	api := newGenesysAPI(t, f.login)
	s := startSidecar(t, proxyEnv(f, api), "-allowed-tenants", "acme,nobody")

	cases := []struct {
		name   string
		path   string
		header map[string]string
		status int
		code   string
	}{
		{"no request header", "/proxy/api/v2/users/me", map[string]string{"X-Token-Request": "", "X-Tenant-ID": "acme"}, 403, "REQUEST_HEADER_REQUIRED"},
		{"no tenant", "/proxy/api/v2/users/me?tenant=acme", nil, 400, "INVALID_REQUEST"},
		{"malformed tenant", "/proxy/api/v2/users/me", map[string]string{"X-Tenant-ID": "a/b"}, 400, "INVALID_REQUEST"},
		{"not allowed", "/proxy/api/v2/users/me", map[string]string{"X-Tenant-ID": "other"}, 403, "TENANT_NOT_ALLOWED"},
		{"dot segments", "/proxy/api/v2/../../token", map[string]string{"X-Tenant-ID": "acme"}, 400, "INVALID_REQUEST"},
		{"escaped dot segments", "/proxy/api/%2e%2e/%2E%2E/token", map[string]string{"X-Tenant-ID": "acme"}, 400, "INVALID_REQUEST"},
		{"no credentials", "/proxy/api/v2/users/me", map[string]string{"X-Tenant-ID": "nobody"}, 404, "CREDENTIALS_NOT_FOUND"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, http.MethodGet, s.tokenURL+tc.path, tc.header)
			if a.Status != tc.status || a.Code != tc.code || !strings.HasPrefix(a.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("status %d code %q (%s); want %d %q as JSON", a.Status, a.Code, a.Message, tc.status, tc.code)
			}
		})
	}
	if n := len(api.requests()); n != 0 {
		t.Errorf("refused requests reached the API %d times", n)
	}
	if n := f.ts.Calls("acme", "genesys") + f.login.TotalCalls(); n != 0 {
		t.Errorf("refused requests made %d calls to the Tenant Service or the login", n)
	}
}

// TestAPIProxyStreamsPastTheWriteTimeout: the token listener's write timeout
// is -request-timeout + 5 s; a /proxy/ answer may stream for longer.
func TestAPIProxyStreamsPastTheWriteTimeout(t *testing.T) {
	t.Parallel()
	f := newFakes(t)
	f.addTenant("acme")
	api := newGenesysAPI(t, f.login)
	s := startSidecar(t, proxyEnv(f, api), "-request-timeout", "100ms", "-default-tenant", "acme")
	start := time.Now()
	resp, body := proxied(t, http.MethodGet, s.tokenURL+"/proxy/slow-stream/7", nil, nil)
	want := ""
	for i := range 7 {
		want += fmt.Sprintf("piece %d\n", i)
	}
	if resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("after %v: status %d body %q; want all 7 pieces", time.Since(start), resp.StatusCode, body)
	}
}

func TestDemoProxiesToTheFakeAPI(t *testing.T) {
	s := startSidecar(t, nil, "-demo")
	resp, body := proxied(t, http.MethodGet, s.tokenURL+"/proxy/api/v2/users/me?expand=x", nil, http.Header{"X-Tenant-Id": {"demo-tenant"}})
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"path":"/api/v2/users/me"`)) || !bytes.Contains(body, []byte(`"query":"expand=x"`)) {
		t.Fatalf("demo /proxy/: %d %s; want the fake API's echo", resp.StatusCode, body)
	}
}
