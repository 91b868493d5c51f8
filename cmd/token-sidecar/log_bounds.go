package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"unicode/utf8"
)

// Bounds of a log line. Whatever an upstream, an app or a library puts in a
// record, no line written is longer than maxLogLine: boundedHandler cuts
// the message and attribute values, and drops attributes past the budget.
const (
	maxLogLine = 8 << 10
	// logLineReserve is kept for what boundedHandler does not see or
	// count exactly: time, level, the keys' quotes and separators.
	logLineReserve = 512
	// maxLogMessage bounds a record's message, in escaped bytes.
	maxLogMessage = 512
	// maxLogValue bounds one string value, in escaped bytes, before the
	// record's budget is shared out.
	maxLogValue = 4 << 10
	// maxGroupValue bounds a string inside a group.
	maxGroupValue = 256
	// maxLogKey bounds a key or group name.
	maxLogKey = 64
	// maxLogAttrs bounds the attributes of a record; maxGroupAttrs those
	// of a group.
	maxLogAttrs   = 32
	maxGroupAttrs = 16
	// maxBakedAttrs bounds what WithAttrs and WithGroup add to every line.
	maxBakedAttrs = 2 << 10
	// truncatedMark ends a value that was cut; droppedMark replaces one
	// that did not fit at all.
	truncatedMark = "…[truncated]"
	droppedMark   = "[dropped]"
)

// boundedHandler keeps every record within maxLogLine bytes of JSON, as a
// last line of defence: the code that logs already keeps upstream text out
// of its records, but a line that an upstream can make arbitrarily long is a
// denial of service on the log pipeline. Small attributes are kept whole;
// the longest string values are cut to share the budget ("water-filling"),
// and attributes past maxLogAttrs are dropped and counted
// (log_attrs_dropped).
type boundedHandler struct {
	inner slog.Handler
	// used is the escaped size of the attributes and groups WithAttrs and
	// WithGroup have baked into inner.
	used int
}

func newBoundedHandler(h slog.Handler) slog.Handler { return &boundedHandler{inner: h} }

// Enabled implements slog.Handler.
func (h *boundedHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *boundedHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.fits(r) {
		return h.inner.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, cutString(r.Message, maxLogMessage), r.PC)
	attrs := make([]slog.Attr, 0, r.NumAttrs())
	dropped := 0
	r.Attrs(func(a slog.Attr) bool {
		if len(attrs) == maxLogAttrs {
			dropped++
			return true
		}
		attrs = append(attrs, boundAttr(a, maxLogValue))
		return true
	})
	budget := maxLogLine - logLineReserve - h.used - jsonCost(out.Message)
	if dropped > 0 {
		budget -= 32
	}
	shareBudget(attrs, budget)
	out.AddAttrs(attrs...)
	if dropped > 0 {
		out.AddAttrs(slog.Int("log_attrs_dropped", dropped))
	}
	return h.inner.Handle(ctx, out)
}

// fits reports, without allocating, whether r is within every bound as it
// is: a short message and few attributes of plain kinds and short strings
// whose total is within the budget. Records that hold a group, or a value
// of kind Any other than an error, take the long way.
func (h *boundedHandler) fits(r slog.Record) bool {
	if r.NumAttrs() > maxLogAttrs || jsonCost(r.Message) > maxLogMessage {
		return false
	}
	total, ok := 0, true
	r.Attrs(func(a slog.Attr) bool {
		if jsonCost(a.Key) > maxLogKey {
			ok = false
			return false
		}
		var c int
		switch v := a.Value; v.Kind() {
		case slog.KindString:
			c = jsonCost(v.String())
		case slog.KindGroup, slog.KindLogValuer:
			ok = false
			return false
		case slog.KindAny:
			err, isErr := v.Any().(error)
			if _, marshals := v.Any().(json.Marshaler); !isErr || marshals {
				ok = false
				return false
			}
			c = jsonCost(err.Error())
		default:
			c = 40
		}
		if c > maxLogValue {
			ok = false
			return false
		}
		total += c + jsonCost(a.Key) + 4
		return true
	})
	return ok && total <= maxLogLine-logLineReserve-h.used-jsonCost(r.Message)
}

// WithAttrs implements slog.Handler. Attributes past maxBakedAttrs bytes
// in all are dropped: they would be on every line.
func (h *boundedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	kept := make([]slog.Attr, 0, len(attrs))
	used := h.used
	for _, a := range attrs {
		a = boundAttr(a, maxGroupValue)
		if c := attrCost(a); used+c <= maxBakedAttrs {
			kept = append(kept, a)
			used += c
		}
	}
	return &boundedHandler{inner: h.inner.WithAttrs(kept), used: used}
}

// WithGroup implements slog.Handler.
func (h *boundedHandler) WithGroup(name string) slog.Handler {
	name = cutString(name, maxLogKey)
	return &boundedHandler{inner: h.inner.WithGroup(name), used: h.used + jsonCost(name) + 8}
}

// boundAttr resolves a and cuts its strings to limit escaped bytes: a
// string value, an error's text, a value that marshals to longer JSON
// (which then becomes its cut text), and the strings of a group, each to
// maxGroupValue.
func boundAttr(a slog.Attr, limit int) slog.Attr {
	a.Key = cutString(a.Key, maxLogKey)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, cutString(v.String(), limit))
	case slog.KindGroup:
		group := v.Group()
		bounded := make([]slog.Attr, 0, min(len(group), maxGroupAttrs))
		for _, g := range group[:min(len(group), maxGroupAttrs)] {
			bounded = append(bounded, boundAttr(g, maxGroupValue))
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(bounded...)}
	case slog.KindAny:
		x := v.Any()
		if _, marshals := x.(json.Marshaler); !marshals {
			if err, ok := x.(error); ok {
				return slog.String(a.Key, cutString(err.Error(), limit))
			}
		}
		b, err := json.Marshal(x)
		if err != nil || len(b) > limit {
			return slog.String(a.Key, cutString(fmt.Sprint(x), limit))
		}
		return slog.Attr{Key: a.Key, Value: v}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// shareBudget makes attrs, in place, cost at most budget escaped bytes. It
// cuts the longest string values first: to the largest cap such that every
// string cut to it fits ("water-filling"), so that short values stay whole.
// If the other kinds alone are too large, the costliest attributes become
// droppedMark until the rest fits; with maxLogAttrs attributes of at most
// maxLogKey-byte keys, that always ends within budget.
func shareBudget(attrs []slog.Attr, budget int) {
	total := 0
	for _, a := range attrs {
		total += attrCost(a)
	}
	if total <= budget {
		return
	}
	mark := jsonCost(truncatedMark)
	fixed := 0
	costs := make([]int, len(attrs)) // of string values; -1 for other kinds
	for i, a := range attrs {
		if a.Value.Kind() == slog.KindString {
			costs[i] = jsonCost(a.Value.String())
			fixed += jsonCost(a.Key) + 4
		} else {
			costs[i] = -1
			fixed += attrCost(a)
		}
	}
	cost := func(limit int) int {
		sum := fixed
		for _, c := range costs {
			switch {
			case c < 0:
			case c <= limit:
				sum += c
			default:
				sum += max(limit, mark)
			}
		}
		return sum
	}
	lo, hi := 0, maxLogValue+1 // cost(hi) > budget, as total is
	for lo+1 < hi {
		if mid := (lo + hi) / 2; cost(mid) <= budget {
			lo = mid
		} else {
			hi = mid
		}
	}
	total = 0
	for i, c := range costs {
		if c > lo {
			attrs[i] = slog.String(attrs[i].Key, cutString(attrs[i].Value.String(), max(lo, mark)))
		}
		total += attrCost(attrs[i])
	}
	for total > budget {
		worst := 0
		for i := range attrs {
			if attrCost(attrs[i]) > attrCost(attrs[worst]) {
				worst = i
			}
		}
		before := attrCost(attrs[worst])
		attrs[worst] = slog.String(attrs[worst].Key, droppedMark)
		if after := attrCost(attrs[worst]); after < before {
			total += after - before
		} else {
			return // nothing left to cut; the bounds make this unreachable
		}
	}
}

// attrCost is an upper bound of a's size as JSON, separators included.
func attrCost(a slog.Attr) int {
	c := jsonCost(a.Key) + 4
	switch v := a.Value; v.Kind() {
	case slog.KindString:
		return c + jsonCost(v.String())
	case slog.KindGroup:
		for _, g := range v.Group() {
			c += attrCost(g)
		}
		return c + 2
	case slog.KindAny:
		b, _ := json.Marshal(v.Any())
		return c + len(b)
	}
	return c + 40 // numbers, booleans, durations, times
}

// jsonCost is an upper bound of s's size as a JSON string, quotes
// excluded: a printable ASCII byte costs 1 (2 for '"' and '\\'), any other
// byte 6, as if it were escaped as \u00XX.
func jsonCost(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n += byteCost(s[i])
	}
	return n
}

func byteCost(b byte) int {
	switch {
	case b == '"' || b == '\\':
		return 2
	case b >= 0x20 && b < 0x7f && b != '<' && b != '>' && b != '&':
		return 1
	}
	return 6
}

// cutString returns s if its escaped size is within limit, else its
// longest prefix, cut at a rune boundary, that fits with truncatedMark
// after it.
func cutString(s string, limit int) string {
	if jsonCost(s) <= limit {
		return s
	}
	room := limit - jsonCost(truncatedMark)
	n, end := 0, 0
	for i, r := range s {
		size := utf8.RuneLen(r)
		if r == utf8.RuneError {
			size = 1
		}
		c := 0
		for j := i; j < i+size && j < len(s); j++ {
			c += byteCost(s[j])
		}
		if n+c > room {
			break
		}
		n += c
		end = i + size
	}
	return s[:end] + truncatedMark
}
