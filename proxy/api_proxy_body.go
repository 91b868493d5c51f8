package proxy

// This file holds how /proxy/ buffers request bodies so that a request can be
// sent again after a 401: only bytes that arrived, within a budget shared by
// all requests.

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// DefaultAPIRetryBuffer is Config.APIRetryBuffer's zero value: 32 MiB.
const DefaultAPIRetryBuffer = 32 << 20

// firstBodyChunk is the first buffer a body is read into; it doubles as the
// body arrives. Most API request bodies are small JSON documents.
const firstBodyChunk = 4 << 10

// retryBudget bounds the bytes that the body buffers of all /proxy/ requests
// together hold for a 401 retry. It counts each buffer's capacity, which
// grows only as bytes arrive: at most twice the bytes read, and at least
// firstBodyChunk (or the whole body, if smaller). A nil *retryBudget grants
// nothing. Safe for concurrent use.
type retryBudget struct {
	max  int64
	used atomic.Int64
}

// newRetryBudget returns a budget of max bytes; max <= 0 grants nothing.
func newRetryBudget(max int64) *retryBudget {
	if max <= 0 {
		return nil
	}
	return &retryBudget{max: max}
}

// reserve takes n bytes of the budget if they are free.
func (b *retryBudget) reserve(n int64) bool {
	if b == nil {
		return false
	}
	for {
		used := b.used.Load()
		if used+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// release gives back n bytes taken by reserve.
func (b *retryBudget) release(n int64) {
	if b != nil && n != 0 {
		b.used.Add(-n)
	}
}

// inUse is the number of bytes reserved now.
func (b *retryBudget) inUse() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// takeBody decides whether req can be replayed and, if so, buffers its body,
// reserving the buffer from budget as it grows. The caller gives the
// reservation back with releaseBody once the request is done.
//
// The body is read only as it arrives: an announced Content-Length reserves
// nothing by itself. A body announced larger than maxReplayBody is left
// alone and streams to the API as it arrives. Otherwise it is read up to its
// end, or until it turns out larger than maxReplayBody (a chunked one) or
// the budget has no room for the next growth of the buffer: then the bytes
// read so far are sent first, the rest streams behind them, and the request
// is not replayed.
func (call *apiCall) takeBody(req *http.Request, budget *retryBudget) error {
	if req.Body == nil || req.Body == http.NoBody || (req.ContentLength == 0 && len(req.TransferEncoding) == 0) {
		call.replayable = true
		return nil
	}
	if req.ContentLength > maxReplayBody {
		return nil
	}
	// limit is the most the buffer grows to; one more byte read past it
	// tells whether the body ends there.
	limit := int64(maxReplayBody)
	if req.ContentLength > 0 {
		limit = req.ContentLength
	}
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) == limit {
				var probe [1]byte
				n, err := io.ReadFull(req.Body, probe[:])
				if err == io.EOF {
					break // the whole body is in buf
				}
				if err != nil {
					return err
				}
				call.streamBody(req, append(buf, probe[:n]...))
				return nil
			}
			grown := min(max(2*int64(cap(buf)), firstBodyChunk), limit)
			if !budget.reserve(grown - int64(cap(buf))) {
				call.streamBody(req, buf)
				return nil
			}
			call.buffered += grown - int64(cap(buf))
			buf = append(make([]byte, 0, grown), buf...)
		}
		n, err := req.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	call.body, call.replayable = buf, true
	req.Body = io.NopCloser(bytes.NewReader(call.body))
	req.ContentLength = int64(len(call.body))
	req.TransferEncoding = nil
	return nil
}

// streamBody makes req send read first, then the rest of its body as it
// arrives; the request is not replayable.
func (call *apiCall) streamBody(req *http.Request, read []byte) {
	req.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(read), req.Body), req.Body}
}

// releaseBody gives the body buffer's reservation back to budget.
func (call *apiCall) releaseBody(budget *retryBudget) {
	budget.release(call.buffered)
	call.buffered = 0
}

// newBody returns a fresh reader of the buffered body, nil without one.
func (call *apiCall) newBody() (io.ReadCloser, error) {
	if call.body == nil {
		return nil, nil
	}
	return io.NopCloser(bytes.NewReader(call.body)), nil
}

// observe reports the bytes in use as token_sidecar.proxy.retry_buffer.used,
// against the bound token_sidecar.proxy.retry_buffer.limit.
func (b *retryBudget) observe(mp metric.MeterProvider) error {
	if mp == nil || b == nil {
		return nil
	}
	meter := mp.Meter(instrumentationName)
	_, err := meter.Int64ObservableGauge("token_sidecar.proxy.retry_buffer.used", metric.WithUnit("By"),
		metric.WithDescription("Bytes of /proxy/ request bodies buffered for a retry after a 401, all requests together."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(b.inUse())
			return nil
		}))
	if err != nil {
		return err
	}
	_, err = meter.Int64ObservableGauge("token_sidecar.proxy.retry_buffer.limit", metric.WithUnit("By"),
		metric.WithDescription("The most bytes of /proxy/ request bodies buffered for 401 retries (-proxy-retry-buffer)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(b.max)
			return nil
		}))
	return err
}

// progressBody is a /proxy/ request body that must keep arriving: before
// each read it moves the connection's read deadline to idle from now (never
// past end), so a read that waits longer than idle for a byte fails, and
// once the whole body is read the deadline is end again. Reads are sequential
// (one reader: takeBody, or the transport streaming it), as for any body.
type progressBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	end  time.Time
}

func (b *progressBody) Read(p []byte) (int, error) {
	d := time.Now().Add(b.idle)
	if d.After(b.end) {
		d = b.end
	}
	_ = b.rc.SetReadDeadline(d)
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		// Only a whole body gives the connection its long deadline back;
		// after a failed read the server must not wait on it either (it
		// reads what is left of a body before it answers).
		_ = b.rc.SetReadDeadline(b.end)
	}
	return n, err
}
