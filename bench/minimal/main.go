// Command minimal is the footprint reference of issue 14: a sidecar that
// does token-sidecar's token job with the standard library only — GET
// /token?tenant=T (X-Token-Request: true) answered from a map, a miss asking
// the Tenant Service for the tenant's client credentials and exchanging them
// at the login, and GET /healthz. No refresh ahead, retries, breakers,
// limits, metrics or tracing. It takes the flags and environment the load
// tool gives token-sidecar, so that `go run ./bench/loadtest -binary …`
// measures it the same way. It is not a product: nothing else uses it.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

type token struct {
	body    []byte // the answer, as sent
	expires time.Time
}

type sidecar struct {
	tenantService, login string
	client               http.Client
	mu                   sync.Mutex
	tokens               map[string]token
}

func main() {
	fs := flag.NewFlagSet("minimal", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:8181", "token listener")
	admin := fs.String("admin-listen", ":9464", "admin listener (/healthz)")
	_ = fs.String("log-level", "info", "ignored")
	_ = fs.Int("cache-capacity", 0, "ignored: the map is unbounded")
	_ = fs.Parse(os.Args[1:])
	s := &sidecar{tenantService: os.Getenv("SIDECAR_TENANT_SERVICE_URL"), login: os.Getenv("SIDECAR_GENESYS_LOGIN_URL"),
		client: http.Client{Timeout: 10 * time.Second}, tokens: map[string]token{}}
	tl, err := net.Listen("tcp", *listen)
	check(err)
	al, err := net.Listen("tcp", *admin)
	check(err)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	go func() { check(http.Serve(al, mux)) }()
	slog.New(slog.NewJSONHandler(os.Stderr, nil)).Info("token-sidecar started",
		"token_addr", tl.Addr().String(), "admin_addr", al.Addr().String())
	check(http.Serve(tl, http.HandlerFunc(s.serveToken)))
}

func (s *sidecar) serveToken(w http.ResponseWriter, r *http.Request) {
	tenant := r.URL.Query().Get("tenant")
	if r.URL.Path != "/token" || r.Method != http.MethodGet || r.Header.Get("X-Token-Request") != "true" || tenant == "" {
		http.Error(w, `{"code":"BAD_REQUEST"}`, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	t, ok := s.tokens[tenant]
	s.mu.Unlock()
	if !ok || time.Now().After(t.expires) {
		var err error
		if t, err = s.fetch(tenant); err != nil {
			http.Error(w, `{"code":"UPSTREAM_ERROR"}`, http.StatusBadGateway)
			return
		}
		s.mu.Lock()
		s.tokens[strings.Clone(tenant)] = t
		s.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(t.body)
}

// fetch asks the Tenant Service for the tenant's credentials and exchanges
// them for a token.
func (s *sidecar) fetch(tenant string) (token, error) {
	var creds struct{ ClientID, ClientSecret string }
	resp, err := s.client.Get(s.tenantService + "/tenants/" + url.PathEscape(tenant) + "/credentials/genesys")
	if err = decode(resp, err, &creds); err != nil {
		return token{}, err
	}
	req, err := http.NewRequest(http.MethodPost, s.login+"/oauth/token", strings.NewReader("grant_type=client_credentials"))
	if err != nil {
		return token{}, err
	}
	req.SetBasicAuth(creds.ClientID, creds.ClientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
	}
	resp, err = s.client.Do(req)
	if err = decode(resp, err, &tok); err != nil {
		return token{}, err
	}
	life := time.Duration(tok.ExpiresIn) * time.Second
	body, _ := json.Marshal(tok)
	return token{body: body, expires: time.Now().Add(life - min(30*time.Second, life/10))}, nil
}

func decode(resp *http.Response, err error, v any) error {
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "minimal:", err)
		os.Exit(1)
	}
}
