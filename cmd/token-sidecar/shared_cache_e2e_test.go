package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// The tests below run a fleet of sidecar processes (the built binary) on one
// real redis-server and one set of fake upstreams in the test process.

type fleet struct {
	t     *testing.T
	f     *fakes
	redis *redistest.Server
	env   []string
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	buildBinary(t)
	srv := redistest.Start(t)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "shared-cache-keys")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFakes(t)
	return &fleet{t: t, f: f, redis: srv, env: []string{
		"SIDECAR_TENANT_SERVICE_URL=" + f.ts.URL(),
		"SIDECAR_GENESYS_LOGIN_URL=" + f.login.URL(),
		"SIDECAR_SHARED_CACHE_URL=" + srv.URL(),
		"SIDECAR_SHARED_CACHE_KEY_FILE=" + keyFile,
	}}
}

// member is one sidecar process of the fleet.
type member struct {
	cmd    *exec.Cmd
	url    string
	stderr *syncBuffer
}

func (fl *fleet) start(args ...string) *member {
	fl.t.Helper()
	cmd, addr, _, stderr := startBinary(fl.t, fl.env, args...)
	return &member{cmd: cmd, url: "http://" + addr, stderr: stderr}
}

func (fl *fleet) startN(n int, args ...string) []*member {
	fl.t.Helper()
	ms := make([]*member, n)
	for i := range ms {
		ms[i] = fl.start(args...)
	}
	return ms
}

func (m *member) token(t testing.TB, tenant string) tokenAnswer {
	t.Helper()
	return do(t, http.MethodGet, m.url+"/token?tenant="+tenant, nil)
}

// upstreamCalls is every call either fake upstream received.
func (fl *fleet) upstreamCalls() int { return fl.f.ts.TotalCalls() + fl.f.login.TotalCalls() }

func TestFleetColdStampedeMakesOneFetchAndOneExchange(t *testing.T) {
	fl := newFleet(t)
	client := fl.f.addTenant("acme")
	// Hold the credentials answer so that every request arrives while the
	// fleet's one fetch is in flight.
	fl.f.ts.Script("acme", "genesys", upstreamtest.Step{Delay: 500 * time.Millisecond})
	pods := fl.startN(3)

	const callers = 300
	answers := make([]tokenAnswer, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { answers[i] = pods[i%len(pods)].token(t, "acme") })
	}
	wg.Wait()
	for i, a := range answers {
		if a.Status != http.StatusOK || a.AccessToken != answers[0].AccessToken {
			t.Fatalf("caller %d (pod %d): status %d %s token %q; want 200 and the one token %q", i, i%3, a.Status, a.Code, a.AccessToken, answers[0].AccessToken)
		}
	}
	if n := fl.f.ts.Calls("acme", "genesys"); n != 1 {
		t.Errorf("Tenant Service calls = %d, want 1", n)
	}
	if n := fl.f.login.Calls(client); n != 1 {
		t.Errorf("exchanges = %d, want 1", n)
	}
}

func TestFleetWarmTenantsAreServedByEveryPodAndANewOne(t *testing.T) {
	fl := newFleet(t)
	var tenants, secrets []string
	for i := range 20 {
		tenant := fmt.Sprintf("warm-%02d", i)
		client := fl.f.addTenant(tenant)
		cred, _ := fl.f.ts.CredentialsOf(tenant)
		tenants = append(tenants, tenant)
		secrets = append(secrets, tenant, client, cred.ClientSecret)
	}
	pods := fl.startN(3)
	want := map[string]string{}
	for _, tenant := range tenants {
		a := pods[0].token(t, tenant)
		if a.Status != http.StatusOK {
			t.Fatalf("warming %s: %d %s", tenant, a.Status, a.Code)
		}
		want[tenant] = a.AccessToken
		secrets = append(secrets, a.AccessToken)
	}
	calls := fl.upstreamCalls()
	fourth := fl.start() // a pod of a rollout, started after the warm-up
	for i, p := range append(pods[1:], fourth) {
		for _, tenant := range tenants {
			if a := p.token(t, tenant); a.Status != http.StatusOK || a.AccessToken != want[tenant] {
				t.Fatalf("pod %d, %s: status %d token %q, want the warm token", i+1, tenant, a.Status, a.AccessToken)
			}
		}
	}
	if n := fl.upstreamCalls() - calls; n != 0 {
		t.Fatalf("%d upstream calls to serve warm tenants from other pods, want 0", n)
	}

	// The server holds none of it in clear.
	dump := fl.redis.Dump(context.Background(), fl.redis.Client())
	if len(dump) < len(tenants) {
		t.Fatalf("only %d keys on the server", len(dump))
	}
	for _, kv := range dump {
		for _, s := range secrets {
			if strings.Contains(kv, s) {
				t.Fatalf("the server holds %q in clear: %q", s, kv)
			}
		}
	}
}

func TestFleetForcedRefreshOnTwoPodsMakesOneExchange(t *testing.T) {
	fl := newFleet(t)
	client := fl.f.addTenant("acme")
	pods := fl.startN(2)
	old := pods[0].token(t, "acme")
	if a := pods[1].token(t, "acme"); a.AccessToken != old.AccessToken {
		t.Fatalf("pod 1 did not get pod 0's token")
	}
	// Both pods' apps are refused with the old token, and say so.
	refused := map[string]string{"Authorization": "Bearer " + old.AccessToken}
	first := do(t, http.MethodPost, pods[0].url+"/token/refresh?tenant=acme", refused)
	second := do(t, http.MethodPost, pods[1].url+"/token/refresh?tenant=acme", refused)
	if first.Status != http.StatusOK || first.AccessToken == old.AccessToken {
		t.Fatalf("pod 0's refresh: %d %s, token changed %v", first.Status, first.Code, first.AccessToken != old.AccessToken)
	}
	if second.Status != http.StatusOK || second.AccessToken != first.AccessToken {
		t.Fatalf("pod 1's refresh: %d %s, want pod 0's new token", second.Status, second.Code)
	}
	if n := fl.f.login.Calls(client); n != 2 {
		t.Fatalf("exchanges = %d, want 2 (the first token and one forced)", n)
	}
}

func TestFleetLeaseOwnerKilledMidExchangeIsTakenOver(t *testing.T) {
	fl := newFleet(t)
	clientID := fl.f.addTenant("acme")
	// The first exchange hangs far longer than the lease; later ones answer.
	fl.f.login.Script(clientID, upstreamtest.Step{Delay: time.Minute})
	const lease = "1s"
	pods := fl.startN(3, "-shared-cache-lease", lease)
	go func() { // its answer never comes: the pod dies
		req, _ := http.NewRequest(http.MethodGet, pods[0].url+"/token?tenant=acme", nil)
		req.Header.Set("X-Token-Request", "true")
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	for fl.f.login.Calls(clientID) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	const waiters = 20
	answers := make(chan tokenAnswer, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() { answers <- pods[1+i%2].token(t, "acme") })
	}
	time.Sleep(200 * time.Millisecond) // let them reach the lease
	if err := pods[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(answers)
	var token string
	for a := range answers {
		if a.Status != http.StatusOK {
			t.Fatalf("a waiting request got %d %s", a.Status, a.Code)
		}
		if token == "" {
			token = a.AccessToken
		}
		if a.AccessToken != token {
			t.Fatal("the surviving pods served two tokens")
		}
	}
	if n := fl.f.login.Calls(clientID); n != 2 {
		t.Fatalf("exchanges = %d, want 2 (the dead pod's and one take-over)", n)
	}
}

func TestFleetRedisKilledThenBack(t *testing.T) {
	fl := newFleet(t)
	fl.f.addTenant("cached")
	const newPerPod = 5 // enough failed look-ups to open every pod's breaker
	for i := range 3 * newPerPod {
		fl.f.addTenant(fmt.Sprintf("new-%d", i))
	}
	pods := fl.startN(3)
	for _, p := range pods {
		if a := p.token(t, "cached"); a.Status != http.StatusOK {
			t.Fatalf("warm-up: %d", a.Status)
		}
	}
	fl.redis.Kill()
	for i, p := range pods {
		for range 3 {
			if a := p.token(t, "cached"); a.Status != http.StatusOK {
				t.Fatalf("pod %d, cached tenant, Redis down: %d %s", i, a.Status, a.Code)
			}
		}
		// Tenants the pod never saw are fetched on its own.
		for j := range newPerPod {
			if a := p.token(t, fmt.Sprintf("new-%d", i*newPerPod+j)); a.Status != http.StatusOK {
				t.Fatalf("pod %d, new tenant, Redis down: %d %s", i, a.Status, a.Code)
			}
		}
	}
	if logs := pods[0].stderr.String(); !strings.Contains(logs, fl.redis.Addr()) || !strings.Contains(logs, `"breaker":"open"`) {
		t.Fatalf("the log does not name the failing server:\n%s", logs)
	}

	fl.redis.Restart()
	// Sharing resumes by itself once the breakers let a probe through.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		tenant := fmt.Sprintf("after-%d", i)
		client := fl.f.addTenant(tenant)
		if a := pods[0].token(t, tenant); a.Status != http.StatusOK {
			t.Fatalf("%s on pod 0: %d", tenant, a.Status)
		}
		if a := pods[1].token(t, tenant); a.Status != http.StatusOK {
			t.Fatalf("%s on pod 1: %d", tenant, a.Status)
		}
		if fl.f.login.Calls(client) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sharing did not resume after Redis came back")
		}
		time.Sleep(250 * time.Millisecond)
	}
}
