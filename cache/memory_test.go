package cache

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/jellydator/ttlcache/v3"
)

// TestEntriesKeepNoCallerMemory: what a cached tenant keeps is its own. The
// state's tenant string is a copy, not the caller's (in the sidecar a
// substring of the request line, which it would keep alive whole), and
// tokens with the same TokenType and APIBaseURL share one copy of each
// instead of every decoded answer's own.
func TestEntriesKeepNoCallerMemory(t *testing.T) {
	clk := newClock()
	c, err := New(Config{Source: SourceFunc(func(_ context.Context, req FetchRequest) (Token, error) {
		// Each answer's strings are its own, as when decoded from JSON.
		return Token{AccessToken: req.Key.Tenant, TokenType: strings.Clone("bearer"),
			APIBaseURL: strings.Clone("https://api.mypurecloud.ie"),
			ExpiresAt:  clk.Now().Add(24 * time.Hour), Lifetime: 24 * time.Hour}, nil
	}), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	line := "GET /token?tenant=acme HTTP/1.1"
	callerKey := Key{Provider: "genesys", Tenant: line[len("GET /token?tenant="):][:len("acme")]}
	other := Key{Provider: "genesys", Tenant: "globex"}
	for _, k := range []Key{callerKey, other} {
		if _, err := c.Get(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}

	c.mu.Lock()
	sa, sb := c.states[callerKey], c.states[other]
	c.mu.Unlock()
	if sa == nil || sb == nil {
		t.Fatal("no state for the tenants")
	}
	if sa.key.Tenant != "acme" || unsafe.StringData(sa.key.Tenant) == unsafe.StringData(callerKey.Tenant) {
		t.Errorf("the state's tenant %q shares the caller's string", sa.key.Tenant)
	}
	ta, tb := sa.view.Load().tok, sb.view.Load().tok
	if ta.TokenType != "bearer" || unsafe.StringData(ta.TokenType) != unsafe.StringData(tb.TokenType) {
		t.Errorf("TokenType %q / %q: two copies", ta.TokenType, tb.TokenType)
	}
	if ta.APIBaseURL != "https://api.mypurecloud.ie" || unsafe.StringData(ta.APIBaseURL) != unsafe.StringData(tb.APIBaseURL) {
		t.Errorf("APIBaseURL %q / %q: two copies", ta.APIBaseURL, tb.APIBaseURL)
	}
}

// memoryTenants is the tenant count of the footprint figure (issue 14).
const memoryTenants = 20000

// liveHeap is the heap in use once two GC cycles have swept everything
// unreachable.
func liveHeap() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc)
}

// sizeClass is the size of the runtime's allocation for an object of n
// bytes (the small size classes of runtime/sizeclasses.go up to 512 B).
func sizeClass(n uintptr) uintptr {
	for _, c := range []uintptr{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320, 352, 384, 416, 448, 480, 512} {
		if n <= c {
			return c
		}
	}
	return n
}

// upstreamToken is a token as the upstream pipeline hands it over: every
// string its own allocation, as when decoded from JSON, a 43-character
// access token (the fake login's; Genesys tokens are of that order).
func upstreamToken(i int) Token {
	return Token{
		AccessToken: fmt.Sprintf("%043d", i),
		TokenType:   strings.Clone("bearer"),
		ExpiresAt:   time.Now().Add(86399 * time.Second),
		Lifetime:    86399 * time.Second,
		APIBaseURL:  strings.Clone("https://api.mypurecloud.ie"),
	}
}

func memoryKeys() []Key {
	keys := make([]Key, memoryTenants)
	for i := range keys {
		keys[i] = Key{Provider: "genesys", Tenant: fmt.Sprintf("mem-%06d", i)}
	}
	return keys
}

// BenchmarkMemoryPerTenant fills a cache as the sidecar runs it (real
// clock and timer) with 20,000 tenants through Get, each served once, and
// reports the live heap per tenant (B/tenant) and its parts: ttlcache's
// own cost per item (item, map slot, LRU element, expiry-queue slot:
// B/ttlcache-item, measured on a bare ttlcache.Cache of the same types),
// the registry's map slot (B/registry-slot, a bare map of the same type),
// the state and view records (their size classes), the tenant and access
// token strings and the scheduler's heap slot; B/other is what the parts
// leave of B/tenant.
func BenchmarkMemoryPerTenant(b *testing.B) {
	keys := memoryKeys()
	var total, idx, reg float64
	for range b.N {
		// The cache, through Get.
		before := liveHeap()
		var n atomic.Int64
		c, err := New(Config{Capacity: memoryTenants + 10000, Source: SourceFunc(func(context.Context, FetchRequest) (Token, error) {
			return upstreamToken(int(n.Add(1))), nil
		})})
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range keys {
			// The request's own copy of the tenant: the cache keeps one of
			// its own.
			k.Tenant = strings.Clone(k.Tenant)
			if _, err := c.Get(context.Background(), k); err != nil {
				b.Fatal(err)
			}
		}
		total += (liveHeap() - before) / memoryTenants
		if c.Len() != memoryTenants {
			b.Fatalf("cache holds %d entries, want %d", c.Len(), memoryTenants)
		}
		c.Close()
		runtime.KeepAlive(c)

		// ttlcache alone, same types and options, one shared value.
		before = liveHeap()
		tc := ttlcache.New(ttlcache.WithCapacity[Key, *view](memoryTenants+10000), ttlcache.WithDisableTouchOnHit[Key, *view]())
		for _, k := range keys {
			tc.Set(k, emptyView, time.Hour)
		}
		idx += (liveHeap() - before) / memoryTenants
		runtime.KeepAlive(tc)

		// The registry's map alone.
		before = liveHeap()
		m := map[Key]*state{}
		for _, k := range keys {
			m[k] = nil
		}
		reg += (liveHeap() - before) / memoryTenants
		runtime.KeepAlive(m)
	}
	n := float64(b.N)
	total, idx, reg = total/n, idx/n, reg/n
	st, vw := float64(sizeClass(unsafe.Sizeof(state{}))), float64(sizeClass(unsafe.Sizeof(view{})))
	strs := float64(sizeClass(uintptr(len(keys[0].Tenant))) + sizeClass(43))
	// The scheduler's heap: one pointer per state, append's growth.
	var h []*state
	for range memoryTenants {
		h = append(h, nil)
	}
	sched := float64(cap(h)*8) / memoryTenants
	b.ReportMetric(total, "B/tenant")
	b.ReportMetric(idx, "B/ttlcache-item")
	b.ReportMetric(reg, "B/registry-slot")
	b.ReportMetric(st, "B/state")
	b.ReportMetric(vw, "B/view")
	b.ReportMetric(strs, "B/strings")
	b.ReportMetric(sched, "B/sched-slot")
	b.ReportMetric(total-idx-reg-st-vw-strs-sched, "B/other")
}

// TestRecordsKeepTheirSizeClass: the two records every cached tenant keeps
// stay within the size classes they were packed into, so that a field
// added to one is a decision about every tenant's footprint, not an
// accident of padding.
func TestRecordsKeepTheirSizeClass(t *testing.T) {
	for _, r := range []struct {
		name      string
		size, max uintptr
	}{
		{"view", unsafe.Sizeof(view{}), 128},
		{"state", unsafe.Sizeof(state{}), 128},
	} {
		if got := sizeClass(r.size); got > r.max {
			t.Errorf("%s is %d B, allocated as %d B: more than its %d B size class", r.name, r.size, got, r.max)
		}
	}
}
