package sharedcache

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// notifier wakes the fetches of this process that wait for a lease held by
// another sidecar: a lease's holder publishes the lease's name on one
// channel when it releases it (its token shared or its fetch failed), and
// the notifier, subscribed to that channel on a connection of its own,
// wakes whoever waits for that name.
//
// Pub/sub is fire-and-forget: a message sent while the subscription is down
// is lost, and a dead holder sends none. Waiters therefore also poll, slowly
// while the subscription is live and quickly while it is not (see
// waitFor); bench/README.md has the measurements behind this.
type notifier struct {
	rdb     *redis.Client
	channel string
	timeout time.Duration
	// open reports whether the store's breaker is open: no subscription is
	// attempted then, so that a dead server costs no dial per second.
	open func() bool

	live atomic.Bool // subscribed now

	mu      sync.Mutex
	waiters map[string]*waiting
}

// waiting is the wake-up of every waiter of one name: ch is closed on the
// next notification for it; n counts the waiters still registered.
type waiting struct {
	ch chan struct{}
	n  int
}

func newNotifier(rdb *redis.Client, channel string, timeout time.Duration, open func() bool) *notifier {
	return &notifier{rdb: rdb, channel: channel, timeout: timeout, open: open, waiters: map[string]*waiting{}}
}

// wait returns a channel closed at the next notification for name, and the
// function the waiter calls when it stops waiting.
func (n *notifier) wait(name string) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.waiters[name]
	if w == nil {
		w = &waiting{ch: make(chan struct{})}
		n.waiters[name] = w
	}
	w.n++
	return w.ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		w.n--
		if w.n == 0 && n.waiters[name] == w {
			delete(n.waiters, name)
		}
	}
}

// notify wakes the waiters of name.
func (n *notifier) notify(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w := n.waiters[name]; w != nil {
		close(w.ch)
		delete(n.waiters, name)
	}
}

// notifyAll wakes every waiter: a message may have been lost.
func (n *notifier) notifyAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, w := range n.waiters {
		close(w.ch)
		delete(n.waiters, name)
	}
}

// idleCheck is how long a quiet subscription waits before it pings the
// server, to find out whether it is still there.
const idleCheck = 15 * time.Second

// run keeps the subscription up until ctx ends, resubscribing after a
// failure with a backoff from 100 ms to 5 s.
func (n *notifier) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if !n.open() && n.subscribe(ctx) {
			backoff = 100 * time.Millisecond
		} else {
			backoff = min(2*backoff, 5*time.Second)
		}
		select {
		case <-ctx.Done():
		case <-time.After(jitter(backoff)):
		}
	}
}

// subscribe subscribes and delivers notifications until the subscription
// fails or ctx ends; it reports whether it was subscribed at all.
func (n *notifier) subscribe(ctx context.Context) bool {
	ps := n.rdb.Subscribe(ctx)
	defer ps.Close()
	sctx, cancel := context.WithTimeout(ctx, n.timeout)
	err := ps.Subscribe(sctx, n.channel)
	if err == nil {
		_, err = ps.ReceiveTimeout(sctx, n.timeout) // the confirmation
	}
	cancel()
	if err != nil {
		return false
	}
	n.live.Store(true)
	// A blocked receive does not watch ctx: closing the connection ends it.
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			ps.Close()
		case <-stopped:
		}
	}()
	defer func() {
		close(stopped)
		n.live.Store(false)
		n.notifyAll()
	}()
	for {
		msg, err := ps.ReceiveTimeout(ctx, idleCheck)
		var ne net.Error
		switch {
		case err == nil:
			if m, ok := msg.(*redis.Message); ok {
				n.notify(m.Payload)
			}
		case errors.As(err, &ne) && ne.Timeout():
			pctx, cancel := context.WithTimeout(ctx, n.timeout)
			perr := ps.Ping(pctx)
			cancel()
			if perr != nil {
				return true
			}
		default:
			return true
		}
	}
}
