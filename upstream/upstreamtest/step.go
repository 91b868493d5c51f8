// Package upstreamtest provides in-process fakes of the sidecar's upstreams:
// a Tenant Service, the Genesys Cloud login (OAuth token endpoint) and a
// minimal Genesys Platform API. They behave as shared/docs/regions.md
// describes the real services, and have knobs per tenant or client for the
// faults the sidecar must survive: status sequences, delays, Retry-After,
// malformed or oversized bodies, slow bodies, dropped connections and
// broken HTTP (Step.Malformed).
//
// The fakes are plain httptest servers on loopback, importable by non-test
// code (token-sidecar -demo uses them). Every fake is safe for concurrent
// use; Close stops it and ends any delayed answer at once.
//
// This package must not import any package of this module except regions.
package upstreamtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Step is one scripted answer, consumed by one request before the fake's
// normal behaviour resumes. The zero Step answers normally; fields change
// that answer in this order: Delay, Drop, Status/Body/Header/RetryAfter,
// then Malformed, Truncate or Trickle.
type Step struct {
	// Status, when non-zero, replaces the normal answer: this status with
	// Body (Content-Type application/json unless Header sets one). When zero,
	// the normal answer is sent, with the other fields applied to it.
	Status int
	// Body is the body of a Status answer; nil means empty.
	Body []byte
	// Header is added to the answer.
	Header http.Header
	// RetryAfter, when non-empty, is sent as the Retry-After header, as is
	// ("2", or an HTTP-date).
	RetryAfter string
	// Delay waits before answering (or dropping). It ends early when the
	// client goes away or the fake is closed.
	Delay time.Duration
	// Drop hijacks the connection and closes it without any answer.
	Drop bool
	// Truncate sends the headers, announcing the full Content-Length, and
	// only the first half of the body, then closes the connection.
	Truncate bool
	// Trickle sends the headers at once and spreads the body over this
	// duration, in ten pieces.
	Trickle time.Duration
	// Malformed, when set, writes the answer as broken HTTP/1.1 straight
	// to the hijacked connection and closes it (see Malformation). The
	// broken bytes carry the answer's secret, as a broken server's would:
	// a client that quotes what it received leaks it.
	Malformed Malformation
}

// Malformation is a way of breaking an HTTP/1.1 answer on the wire; the
// zero value breaks nothing.
type Malformation int

// The malformed answers a fake can send. Each carries the normal answer's
// secret (client secret, access token) in the bytes that break it.
const (
	// MissingStatusLine sends the body alone, without status line or
	// headers, as an HTTP/0.9 server or a raw socket would: the client
	// takes the body's first line for a status line.
	MissingStatusLine Malformation = iota + 1
	// HeaderWithoutColon sends the status line and headers with one more
	// header line made of the answer's secret field and value and no colon
	// ("clientSecret s3cr3t", "access_token …"; for a Status step, the body
	// with its colons and line breaks taken out).
	HeaderWithoutColon
	// ShortContentLength announces half the body's length in
	// Content-Length and sends the whole body: the bytes past the
	// announced length are left on the connection, where the client reads
	// them as the start of the next answer.
	ShortContentLength
)

// RateLimitStep is Genesys's token-creation rate-limit answer: 400
// invalid_request with a description starting "rate limit exceeded".
// Genesys does not document a Retry-After on it; set Step.RetryAfter to
// send one.
func RateLimitStep() Step {
	return Step{
		Status: http.StatusBadRequest,
		Body:   oauthErrorBody("invalid_request", "rate limit exceeded; try again later"),
	}
}

// RecordedRequest is what a fake received.
type RecordedRequest struct {
	Method string
	// RequestURI is the raw request target as sent on the wire, escapes
	// intact (e.g. "/tenants/..%2Fx/credentials/genesys").
	RequestURI string
	// EscapedPath is r.URL.EscapedPath().
	EscapedPath string
	// Header is a copy of the request headers. For the login fake it holds
	// the Authorization header, i.e. a client secret: tests only.
	Header http.Header
	// Body is the request body (the login form); nil for a GET.
	Body []byte
	// Time is when the request arrived.
	Time time.Time
}

// reply is an answer before it is written.
type reply struct {
	status int
	header http.Header
	body   []byte
	// secretLine is the answer's secret field as "name value", for
	// HeaderWithoutColon; "" means the body with its colons taken out.
	secretLine string
}

func jsonReply(status int, body []byte) reply {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return reply{status: status, header: h, body: body}
}

// server is what the fakes share: the httptest server, the request log,
// scripts and the shutdown signal for delayed answers.
type server struct {
	srv       *httptest.Server
	done      chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	requests []RecordedRequest
	scripts  map[string][]Step
	calls    map[string]int
}

func newServer(h func(http.ResponseWriter, *http.Request)) *server {
	s := &server{
		done:    make(chan struct{}),
		scripts: map[string][]Step{},
		calls:   map[string]int{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(h))
	return s
}

// URL is the base URL of the fake, e.g. "http://127.0.0.1:41234".
func (s *server) URL() string { return s.srv.URL }

// Close ends delayed answers, closes client connections and stops the fake.
// It is safe to call more than once.
func (s *server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// record logs r and counts it under key; it returns the body read.
func (s *server) record(r *http.Request, key string) []byte {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if len(body) == 0 {
			body = nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, RecordedRequest{
		Method:      r.Method,
		RequestURI:  r.RequestURI,
		EscapedPath: r.URL.EscapedPath(),
		Header:      r.Header.Clone(),
		Body:        body,
		Time:        time.Now(),
	})
	s.calls[key]++
	return body
}

// Requests returns a copy of every request received, in order.
func (s *server) Requests() []RecordedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RecordedRequest(nil), s.requests...)
}

// TotalCalls is the number of requests received, whatever they asked.
func (s *server) TotalCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

func (s *server) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[key]
}

func (s *server) script(key string, steps []Step) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[key] = append(s.scripts[key], steps...)
}

// clearScript drops the steps still queued for key.
func (s *server) clearScript(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.scripts, key)
}

// nextStep pops the next scripted step for key, or the zero Step.
func (s *server) nextStep(key string) Step {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.scripts[key]
	if len(q) == 0 {
		return Step{}
	}
	s.scripts[key] = q[1:]
	return q[0]
}

// wait sleeps d unless the client leaves or the fake closes; it reports
// whether the whole delay passed.
func (s *server) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-s.done:
	}
	return false
}

// answer writes step's version of the normal reply. normal is called only
// when the step does not replace it, so its side effects (issuing a token)
// happen only for answers actually built from it.
func (s *server) answer(w http.ResponseWriter, r *http.Request, st Step, normal func() reply) {
	if !s.wait(r.Context(), st.Delay) {
		return
	}
	if st.Drop {
		hijackClose(w, nil)
		return
	}
	var rep reply
	if st.Status != 0 {
		rep = jsonReply(st.Status, st.Body)
	} else {
		rep = normal()
	}
	for k, vs := range st.Header {
		rep.header.Del(k)
		for _, v := range vs {
			rep.header.Add(k, v)
		}
	}
	if st.RetryAfter != "" {
		rep.header.Set("Retry-After", st.RetryAfter)
	}
	switch {
	case st.Malformed != 0:
		hijackClose(w, malformed(rep, st.Malformed))
	case st.Truncate:
		var b []byte
		b = fmt.Appendf(b, "HTTP/1.1 %d %s\r\n", rep.status, http.StatusText(rep.status))
		for k, vs := range rep.header {
			for _, v := range vs {
				b = fmt.Appendf(b, "%s: %s\r\n", k, v)
			}
		}
		b = fmt.Appendf(b, "Content-Length: %d\r\n\r\n", len(rep.body))
		b = append(b, rep.body[:len(rep.body)/2]...)
		hijackClose(w, b)
	case st.Trickle > 0:
		s.trickle(w, r, rep, st.Trickle)
	default:
		write(w, rep)
	}
}

// String names the malformation, "" for none.
func (m Malformation) String() string {
	switch m {
	case MissingStatusLine:
		return "missing status line"
	case HeaderWithoutColon:
		return "header without colon"
	case ShortContentLength:
		return "short content-length"
	}
	return ""
}

// malformed is rep on the wire, broken as m says.
func malformed(rep reply, m Malformation) []byte {
	head := func(contentLength int, extra string) []byte {
		b := fmt.Appendf(nil, "HTTP/1.1 %d %s\r\n", rep.status, http.StatusText(rep.status))
		for k, vs := range rep.header {
			for _, v := range vs {
				b = fmt.Appendf(b, "%s: %s\r\n", k, v)
			}
		}
		b = append(b, extra...)
		return fmt.Appendf(b, "Content-Length: %d\r\n\r\n", contentLength)
	}
	switch m {
	case MissingStatusLine:
		return append([]byte(nil), rep.body...)
	case HeaderWithoutColon:
		line := rep.secretLine
		if line == "" {
			line = strings.NewReplacer(":", " ", "\r", " ", "\n", " ").Replace(string(rep.body))
		}
		return append(head(len(rep.body), line+"\r\n"), rep.body...)
	case ShortContentLength:
		return append(head(len(rep.body)/2, ""), rep.body...)
	}
	return nil
}

func write(w http.ResponseWriter, rep reply) {
	for k, vs := range rep.header {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(rep.body)))
	w.WriteHeader(rep.status)
	w.Write(rep.body)
}

func (s *server) trickle(w http.ResponseWriter, r *http.Request, rep reply, over time.Duration) {
	const pieces = 10
	for k, vs := range rep.header {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(rep.body)))
	w.WriteHeader(rep.status)
	flush := func() { http.NewResponseController(w).Flush() }
	flush()
	size := max(1, (len(rep.body)+pieces-1)/pieces)
	for b := rep.body; len(b) > 0; {
		if !s.wait(r.Context(), over/pieces) {
			return
		}
		n := min(size, len(b))
		if _, err := w.Write(b[:n]); err != nil {
			return
		}
		flush()
		b = b[n:]
	}
}

// hijackClose takes the connection over, writes raw to it and closes it:
// the client sees a dropped connection.
func hijackClose(w http.ResponseWriter, raw []byte) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if len(raw) > 0 {
		buf.Write(raw)
		buf.Flush()
	}
}

func oauthErrorBody(code, description string) []byte {
	b, _ := json.Marshal(map[string]string{"error": code, "description": description, "error_description": description})
	return b
}

// randomString returns n random bytes, base64url without padding.
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
