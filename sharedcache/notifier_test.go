package sharedcache

import (
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
)

func TestAReleasedLeaseWakesTheWaitersOfOtherPods(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	holder, waiter := newPod(t, srv.URL(), keys), newPod(t, srv.URL(), keys)
	eventually(t, "the waiter's pod subscribes", waiter.notes.live.Load)
	lease := waiter.namesOf(waiter.ring.Load(), key1).lease
	woken, done := waiter.notes.wait(lease)
	defer done()
	other, doneOther := waiter.notes.wait("another lease")
	defer doneOther()

	mustFetch(t, holder, miss(key1)) // takes, then releases, key1's lease
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("the release did not wake the waiter")
	}
	select {
	case <-other:
		t.Fatal("a waiter of another lease was woken")
	default:
	}
}

func TestALostSubscriptionWakesEveryWaiterAndComesBack(t *testing.T) {
	srv := redistest.Start(t)
	p := newPod(t, srv.URL(), writeKeyFile(t, newKey(t)))
	eventually(t, "subscribed", p.notes.live.Load)
	woken, done := p.notes.wait("some lease")
	defer done()
	srv.Kill()
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("losing the subscription did not wake the waiter")
	}
	eventually(t, "the notifier sees it is down", func() bool { return !p.notes.live.Load() })
	srv.Restart()
	eventually(t, "resubscribed", p.notes.live.Load)
}
