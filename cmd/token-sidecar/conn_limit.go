package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// connLimiter is a listener that keeps at most max connections open and,
// when a new connection arrives at the limit, closes the one that has waited
// longest for a request (an idle keep-alive connection, or a new one that has
// not finished sending its first request's headers) to make room for it.
// So idle connections, however many a client opens, cannot keep a new client
// out: a kubelet probe or a well-behaved container is served at once.
//
// A connection busy with a request is never closed by the limiter. When all
// max connections are busy, Accept waits until one finishes or closes, and
// further clients wait in the kernel's listen backlog, as with
// netutil.LimitListener.
//
// The limiter learns which connections are idle from the http.Server: set
// the server's ConnState to the limiter's ConnState. It is safe for
// concurrent use; Close closes the listener, not the connections (the
// http.Server does that).
type connLimiter struct {
	net.Listener
	max int

	// evicted counts the idle connections closed to make room.
	evicted atomic.Int64

	mu sync.Mutex
	// open is the number of connections counted against max: accepted, and
	// neither closed nor evicted.
	open int
	// idle holds the open connections waiting for a request, longest
	// waiting first: a list through their prev and next fields, so that a
	// request costs no allocation.
	idle idleList
	// changed is closed, and replaced, when a connection leaves the count
	// or becomes idle, and when the listener closes, if an Accept waits
	// (waiting > 0): what that Accept waits for. Nobody waits on the
	// common path, which so costs no allocation per request.
	changed chan struct{}
	waiting int
	closed  bool
}

// newConnLimiter limits ln to max connections; max must be positive.
func newConnLimiter(ln net.Listener, max int) *connLimiter {
	return &connLimiter{Listener: ln, max: max, changed: make(chan struct{})}
}

// limitedConn is a connection counted by a connLimiter. Its fields other
// than Conn are guarded by the limiter's mu.
type limitedConn struct {
	net.Conn
	l *connLimiter
	// idle is true while it is in l.idle, linked through prev and next.
	idle       bool
	prev, next *limitedConn
	// counted is true until the connection is closed or evicted.
	counted bool
}

// Accept waits until a connection may be taken — a slot is free, or an idle
// connection can give way — then accepts one and, at the limit, closes the
// connection idle the longest.
func (l *connLimiter) Accept() (net.Conn, error) {
	if err := l.waitForRoom(); err != nil {
		return nil, err
	}
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	lc := &limitedConn{Conn: c, l: l, counted: true}
	l.mu.Lock()
	// Between waitForRoom and now the idle connections may all have become
	// busy: then this one waits (accepted) for room, like the next ones in
	// the backlog.
	for l.open >= l.max {
		if victim := l.idle.front(); victim != nil {
			l.releaseLocked(victim)
			l.evicted.Add(1)
			l.mu.Unlock()
			victim.Conn.Close()
			l.mu.Lock()
			continue
		}
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return nil, net.ErrClosed
		}
		l.waitLocked()
	}
	l.open++
	// Not a request yet: as evictable as an idle keep-alive connection, and
	// the newest of them.
	l.idle.pushBack(lc)
	l.mu.Unlock()
	return lc, nil
}

// waitForRoom returns once there is a free slot or an idle connection, or
// net.ErrClosed once the listener is closed.
func (l *connLimiter) waitForRoom() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.open >= l.max && l.idle.len == 0 {
		if l.closed {
			return net.ErrClosed
		}
		l.waitLocked()
	}
	if l.closed {
		return net.ErrClosed
	}
	return nil
}

// Close closes the listener and wakes a waiting Accept.
func (l *connLimiter) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		l.signalLocked()
	}
	l.mu.Unlock()
	return l.Listener.Close()
}

// ConnState is the http.Server's ConnState hook: it moves a connection in
// and out of the idle list as the server reads requests on it.
func (l *connLimiter) ConnState(c net.Conn, state http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !lc.counted {
		return
	}
	switch state {
	case http.StateIdle:
		if !lc.idle {
			l.idle.pushBack(lc)
			l.signalLocked()
		}
	case http.StateActive, http.StateHijacked:
		// A hijacked connection stays counted until its new owner closes it.
		l.idle.remove(lc)
	case http.StateClosed:
		l.releaseLocked(lc)
	}
}

// Close closes the connection and frees its slot.
func (c *limitedConn) Close() error {
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// releaseLocked takes c out of the count, once.
func (l *connLimiter) releaseLocked(c *limitedConn) {
	if !c.counted {
		return
	}
	c.counted = false
	l.idle.remove(c)
	l.open--
	l.signalLocked()
}

// idleList is a doubly linked list of connections, oldest first. The zero
// value is empty. Guarded by the limiter's mu.
type idleList struct {
	head, tail *limitedConn
	len        int
}

func (q *idleList) front() *limitedConn { return q.head }

func (q *idleList) pushBack(c *limitedConn) {
	c.idle, c.prev, c.next = true, q.tail, nil
	if q.tail != nil {
		q.tail.next = c
	} else {
		q.head = c
	}
	q.tail = c
	q.len++
}

// remove takes c out of the list if it is in it.
func (q *idleList) remove(c *limitedConn) {
	if !c.idle {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		q.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		q.tail = c.prev
	}
	c.idle, c.prev, c.next = false, nil, nil
	q.len--
}

// waitLocked waits, with mu released, for the next signalLocked.
func (l *connLimiter) waitLocked() {
	ch := l.changed
	l.waiting++
	l.mu.Unlock()
	<-ch
	l.mu.Lock()
	l.waiting--
}

func (l *connLimiter) signalLocked() {
	if l.waiting == 0 {
		return
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// connMetricsScope names the meter of the listeners' connection metrics.
const connMetricsScope = "github.com/token-sidecar/token-sidecar/cmd/token-sidecar"

// observeConnections reports, per listener, the connections a limiter holds
// (token_sidecar.listener.connections) and those it closed to make room
// (token_sidecar.listener.idle_closed). Nil limiters (no bound) are left
// out.
func observeConnections(mp metric.MeterProvider, limiters map[string]*connLimiter) error {
	type observed struct {
		l     *connLimiter
		attrs metric.MeasurementOption
	}
	var ls []observed
	for name, l := range limiters {
		if l != nil {
			ls = append(ls, observed{l, metric.WithAttributes(attribute.String("listener", name))})
		}
	}
	if len(ls) == 0 {
		return nil
	}
	meter := mp.Meter(connMetricsScope)
	open, err := meter.Int64ObservableGauge("token_sidecar.listener.connections", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections open on a bounded listener (-max-connections, -admin-max-connections), busy or idle."))
	if err != nil {
		return err
	}
	closed, err := meter.Int64ObservableCounter("token_sidecar.listener.idle_closed", metric.WithUnit("{connection}"),
		metric.WithDescription("Idle connections a bounded listener closed to make room for a new one."))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, x := range ls {
			x.l.mu.Lock()
			n := x.l.open
			x.l.mu.Unlock()
			o.ObserveInt64(open, int64(n), x.attrs)
			o.ObserveInt64(closed, x.l.evicted.Load(), x.attrs)
		}
		return nil
	}, open, closed)
	return err
}
