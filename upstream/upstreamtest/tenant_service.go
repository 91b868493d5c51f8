package upstreamtest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Credentials are a tenant's Genesys OAuth client as the fake Tenant Service
// serves them.
type Credentials struct {
	ClientID     string
	ClientSecret string
	Region       string
}

// TenantService is a fake Tenant Service:
// GET /tenants/{tenant}/credentials/{provider}, path segments unescaped
// from the raw request path, answering
//
//   - a raw answer set with SetBody, if any;
//   - for "genesys": {"clientId","clientSecret","region"} set with
//     SetCredentials (or generated, with AutoProvision);
//   - for other providers: {"accessToken","expiresAt"?} set with
//     SetStaticToken (or generated, with AutoProvision);
//   - else 404 {"error":"credentials not found"}.
//
// With EncryptFor, a tenant's clientSecret and accessToken are served as a
// JWE sealed for a key, freshly encrypted for every answer.
//
// Scripts (Script) come before all of these. Anything but GET is 405; any
// other path is 404. It is safe for concurrent use.
type TenantService struct {
	*server

	// guarded by server.mu
	creds       map[string]Credentials
	static      map[string]staticToken
	raw         map[string]reply
	encrypt     map[string]*EncryptionKey // by tenant
	auto        bool
	autoRegion  string
	autoLogin   *Login
	serviceName string
}

type staticToken struct {
	accessToken string
	expiresAt   time.Time
}

// NewTenantService starts a fake Tenant Service on a loopback port. Close it
// when done.
func NewTenantService() *TenantService {
	t := &TenantService{
		creds:   map[string]Credentials{},
		static:  map[string]staticToken{},
		raw:     map[string]reply{},
		encrypt: map[string]*EncryptionKey{},
	}
	t.server = newServer(t.serveHTTP)
	return t
}

func key(tenant, provider string) string { return tenant + "\x00" + provider }

// SetCredentials makes the fake answer tenant's "genesys" request with c.
func (t *TenantService) SetCredentials(tenant string, c Credentials) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.creds[tenant] = c
}

// CredentialsOf returns what the fake serves for tenant's "genesys"
// request, including generated credentials; ok is false if it has none yet.
func (t *TenantService) CredentialsOf(tenant string) (c Credentials, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok = t.creds[tenant]
	return c, ok
}

// EncryptFor makes the fake serve tenant's clientSecret and accessToken
// encrypted for key, as a compact JWE; nil serves them in plain again. The
// login fake still knows the plaintext secret, so only a client that opens
// the JWE gets a token.
func (t *TenantService) EncryptFor(tenant string, key *EncryptionKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if key == nil {
		delete(t.encrypt, tenant)
		return
	}
	t.encrypt[tenant] = key
}

// SetStaticToken makes the fake answer tenant's provider request with
// {"accessToken": accessToken, "expiresAt": expiresAt}; a zero expiresAt
// is left out.
func (t *TenantService) SetStaticToken(tenant, provider, accessToken string, expiresAt time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.static[key(tenant, provider)] = staticToken{accessToken, expiresAt}
}

// SetBody makes the fake answer tenant's provider request with exactly this
// status, body and Content-Type ("" means application/json), every time.
func (t *TenantService) SetBody(tenant, provider string, status int, body []byte, contentType string) {
	if contentType == "" {
		contentType = "application/json"
	}
	h := http.Header{}
	h.Set("Content-Type", contentType)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.raw[key(tenant, provider)] = reply{status: status, header: h, body: append([]byte(nil), body...)}
}

// Script queues steps for tenant's provider requests; each request consumes
// one, in order, before the normal answer resumes. Steps add to those
// already queued.
func (t *TenantService) Script(tenant, provider string, steps ...Step) {
	t.script(key(tenant, provider), steps)
}

// ClearScript drops the steps still queued for tenant's provider requests:
// the normal answer resumes at once. A test needs it when a client may
// consume a variable number of steps, as net/http does with Drop: it
// retries a request by itself when a reused keep-alive connection is
// closed under it, but not on a new connection.
func (t *TenantService) ClearScript(tenant, provider string) {
	t.clearScript(key(tenant, provider))
}

// AutoProvision makes the fake invent credentials for any tenant that has
// none: a client ID and random secret in region, registered with login (if
// not nil), and a random static token for other providers. The invented
// credentials stay the same for the tenant afterwards. For -demo and load
// tests.
func (t *TenantService) AutoProvision(region string, login *Login) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.auto, t.autoRegion, t.autoLogin = true, region, login
}

// RequireServiceName makes the fake answer 403 to any request whose
// X-Service-Name is not name; "" turns the check off (the default).
func (t *TenantService) RequireServiceName(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.serviceName = name
}

// Calls is the number of requests received for tenant's provider,
// scripted ones included.
func (t *TenantService) Calls(tenant, provider string) int { return t.count(key(tenant, provider)) }

func (t *TenantService) serveHTTP(w http.ResponseWriter, r *http.Request) {
	tenant, provider, ok := parseCredentialsPath(r.URL.EscapedPath())
	k := ""
	if ok {
		k = key(tenant, provider)
	}
	t.record(r, k)
	switch {
	case !ok:
		write(w, jsonReply(http.StatusNotFound, []byte(`{"error":"not found"}`)))
		return
	case r.Method != http.MethodGet:
		write(w, jsonReply(http.StatusMethodNotAllowed, []byte(`{"error":"method not allowed"}`)))
		return
	}
	t.answer(w, r, t.nextStep(k), func() reply { return t.normal(r, tenant, provider) })
}

// parseCredentialsPath splits /tenants/{t}/credentials/{p} on the escaped
// path, so that an escaped "/" stays inside its segment.
func parseCredentialsPath(escaped string) (tenant, provider string, ok bool) {
	parts := strings.Split(escaped, "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "tenants" || parts[3] != "credentials" {
		return "", "", false
	}
	tenant, err1 := url.PathUnescape(parts[2])
	provider, err2 := url.PathUnescape(parts[4])
	if err1 != nil || err2 != nil || tenant == "" || provider == "" {
		return "", "", false
	}
	return tenant, provider, true
}

func (t *TenantService) normal(r *http.Request, tenant, provider string) reply {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.serviceName != "" && r.Header.Get("X-Service-Name") != t.serviceName {
		return jsonReply(http.StatusForbidden, []byte(`{"error":"service not allowed"}`))
	}
	k := key(tenant, provider)
	if rep, ok := t.raw[k]; ok {
		return reply{status: rep.status, header: rep.header.Clone(), body: rep.body}
	}
	if provider == "genesys" {
		c, ok := t.creds[tenant]
		if !ok && t.auto {
			c = Credentials{ClientID: "demo-" + randomString(9), ClientSecret: randomString(24), Region: t.autoRegion}
			t.creds[tenant] = c
			if t.autoLogin != nil {
				t.autoLogin.AddClient(c.ClientID, c.ClientSecret)
			}
			ok = true
		}
		if ok {
			secret := c.ClientSecret
			if key := t.encrypt[tenant]; key != nil {
				secret = key.MustEncrypt(secret)
			}
			b, _ := json.Marshal(map[string]string{"clientId": c.ClientID, "clientSecret": secret, "region": c.Region})
			rep := jsonReply(http.StatusOK, b)
			rep.secretLine = "clientSecret " + c.ClientSecret
			return rep
		}
	} else {
		st, ok := t.static[k]
		if !ok && t.auto {
			st = staticToken{accessToken: "static-" + randomString(24)}
			t.static[k] = st
			ok = true
		}
		if ok {
			token := st.accessToken
			if key := t.encrypt[tenant]; key != nil {
				token = key.MustEncrypt(token)
			}
			body := map[string]string{"accessToken": token}
			if !st.expiresAt.IsZero() {
				body["expiresAt"] = st.expiresAt.UTC().Format(time.RFC3339)
			}
			b, _ := json.Marshal(body)
			rep := jsonReply(http.StatusOK, b)
			rep.secretLine = "accessToken " + st.accessToken
			return rep
		}
	}
	return jsonReply(http.StatusNotFound, []byte(`{"error":"credentials not found"}`))
}
