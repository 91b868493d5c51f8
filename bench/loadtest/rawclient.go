package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// rawClient sends requests over plain keep-alive HTTP/1.1 connections, one
// per host, and reads the answers with a minimal parser. It belongs to one
// worker and is not safe for concurrent use.
//
// It sends the open loop of hit-vs-static, whose sub-millisecond latencies
// are the sidecar's only if the generator adds next to nothing, and the
// tool's bounded loops (warm-ups, flood, memory, fleet), which need an exact
// count of requests and each answer's outcome. net/http's client, which
// vegeta uses, costs about as much CPU per request as the server it
// measures and runs two goroutines per connection: on a 2-CPU machine its
// scheduling shows up as the sidecar's tail latency. A write and a read on
// the worker's own goroutine is all a request needs here.
type rawClient struct {
	ctx   context.Context
	conns map[string]*rawConn // by host:port
	buf   []byte              // the request being written
}

// rawConn is one connection and its reader.
type rawConn struct {
	c    net.Conn
	br   *bufio.Reader
	stop func() bool // unregisters the cancel hook
}

// rawTimeout bounds one request, as the net/http generator's client did.
const rawTimeout = 30 * time.Second

// maxErrorBody is the most of a non-200 body read to find its error code.
const maxErrorBody = 64 << 10

// newRawClient returns a client whose requests end when ctx is done.
func newRawClient(ctx context.Context) *rawClient {
	return &rawClient{ctx: ctx, conns: map[string]*rawConn{}}
}

// close closes every connection.
func (cl *rawClient) close() {
	for host, rc := range cl.conns {
		rc.close()
		delete(cl.conns, host)
	}
}

func (rc *rawConn) close() {
	rc.stop()
	rc.c.Close()
}

// do sends rq and returns its outcome key: "200", "404 CREDENTIALS_NOT_FOUND"
// (the status and the code of a JSON error body), the status alone when the
// body has no code, or one of the status* errors, with the error itself for
// the first-error log.
func (cl *rawClient) do(rq request) (string, error) {
	u, err := url.Parse(rq.url)
	if err != nil {
		return statusTransport, err
	}
	rc, err := cl.conn(u.Host)
	if err != nil {
		return cl.failure(err)
	}
	status, closeAfter, err := cl.roundTrip(rc, rq.method, u)
	if err != nil || closeAfter {
		// A failed connection is in an unknown state, and one the server
		// closes cannot carry the next request: dial afresh next time.
		rc.close()
		delete(cl.conns, u.Host)
	}
	if err != nil {
		return cl.failure(err)
	}
	return status, nil
}

// conn returns the open connection to host, dialling one if needed.
func (cl *rawClient) conn(host string) (*rawConn, error) {
	if rc, ok := cl.conns[host]; ok {
		return rc, nil
	}
	d := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(cl.ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	rc := &rawConn{c: c, br: bufio.NewReaderSize(c, 16<<10)}
	// Cancelling the run unblocks a read in progress at once.
	rc.stop = context.AfterFunc(cl.ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	cl.conns[host] = rc
	return rc, nil
}

// failure classifies a transport error.
func (cl *rawClient) failure(err error) (string, error) {
	switch {
	case cl.ctx.Err() != nil:
		return statusCanceled, cl.ctx.Err()
	case isTimeout(err):
		return statusTimeout, err
	}
	return statusTransport, err
}

// roundTrip writes one request and reads its answer. closeAfter reports
// that the server closes the connection after it.
func (cl *rawClient) roundTrip(rc *rawConn, method string, u *url.URL) (status string, closeAfter bool, err error) {
	if err := rc.c.SetDeadline(time.Now().Add(rawTimeout)); err != nil {
		return "", false, err
	}
	// The cancel hook may have run before the deadline above replaced
	// its: do not start a request the run no longer wants.
	if err := cl.ctx.Err(); err != nil {
		return "", false, err
	}
	b := cl.buf[:0]
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, u.RequestURI()...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, u.Host...)
	// Sent to both listeners, so that hits and /healthz cost the generator
	// the same; the admin listener ignores it.
	b = append(b, "\r\nX-Token-Request: true\r\n"...)
	if method != "GET" && method != "HEAD" {
		b = append(b, "Content-Length: 0\r\n"...)
	}
	b = append(b, "\r\n"...)
	cl.buf = b
	if _, err := rc.c.Write(b); err != nil {
		return "", false, err
	}
	code, h, err := readFinalHead(rc.br)
	if err != nil {
		return "", false, err
	}
	if method == "HEAD" {
		h.contentLength = 0 // a HEAD answer announces a body it does not send
		h.chunked = false
	}
	if code == 200 {
		_, err = readBody(rc.br, h, io.Discard)
		return "200", h.close, err
	}
	var body bytes.Buffer
	if _, err := readBody(rc.br, h, &limitedWriter{w: &body, n: maxErrorBody}); err != nil {
		return "", false, err
	}
	var e struct {
		Code string `json:"code"`
	}
	if json.Unmarshal(body.Bytes(), &e) != nil || e.Code == "" {
		return strconv.Itoa(code), h.close, nil
	}
	return fmt.Sprintf("%d %s", code, e.Code), h.close, nil
}

// head is what the parser keeps of a response's header.
type head struct {
	code          int
	contentLength int64 // -1 when absent
	chunked       bool
	close         bool
}

var errMalformed = errors.New("malformed HTTP response")

// readFinalHead reads the head of the final answer, skipping interim 1xx
// answers (100 Continue, 103 Early Hints), which have no body.
func readFinalHead(br *bufio.Reader) (int, head, error) {
	for {
		code, h, err := readHead(br)
		if err != nil || code >= 200 || code == 101 {
			return code, h, err
		}
	}
}

// readHead reads a status line and header fields up to the blank line.
func readHead(br *bufio.Reader) (int, head, error) {
	h := head{contentLength: -1}
	line, err := readLine(br)
	if err != nil {
		return 0, h, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, h, fmt.Errorf("%w: status line %q", errMalformed, line)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, h, fmt.Errorf("%w: status line %q", errMalformed, line)
	}
	h.code = code
	for {
		line, err := readLine(br)
		if err != nil {
			return 0, h, err
		}
		if len(line) == 0 {
			return code, h, nil
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, h, fmt.Errorf("%w: header line %q", errMalformed, line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 {
				return 0, h, fmt.Errorf("%w: Content-Length %q", errMalformed, value)
			}
			h.contentLength = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			h.chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			h.close = bytes.EqualFold(value, []byte("close"))
		}
	}
}

// readBody copies the body that h announces to w.
func readBody(br *bufio.Reader, h head, w io.Writer) (int64, error) {
	switch {
	case h.code == 204 || h.code == 304 || (h.code >= 100 && h.code < 200):
		return 0, nil
	case h.chunked:
		return readChunked(br, w)
	case h.contentLength >= 0:
		return io.CopyN(w, br, h.contentLength)
	}
	return 0, fmt.Errorf("%w: a body with neither Content-Length nor chunked encoding", errMalformed)
}

// readChunked copies a chunked body and skips its trailer.
func readChunked(br *bufio.Reader, w io.Writer) (int64, error) {
	var total int64
	for {
		line, err := readLine(br)
		if err != nil {
			return total, err
		}
		size, _, _ := bytes.Cut(line, []byte(";"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 64)
		if err != nil || n < 0 {
			return total, fmt.Errorf("%w: chunk size %q", errMalformed, line)
		}
		if n == 0 {
			for {
				line, err := readLine(br)
				if err != nil || len(line) == 0 {
					return total, err
				}
			}
		}
		m, err := io.CopyN(w, br, n)
		total += m
		if err != nil {
			return total, err
		}
		line, err = readLine(br)
		if err != nil {
			return total, err
		}
		if len(line) != 0 {
			return total, fmt.Errorf("%w: no CRLF after a chunk", errMalformed)
		}
	}
}

// readLine returns one line without its CRLF; it is valid until the next
// read.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: a line longer than %d bytes", errMalformed, br.Size())
		}
		return nil, err
	}
	return bytes.TrimSuffix(line[:len(line)-1], []byte("\r")), nil
}

// limitedWriter keeps the first n bytes written to it and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(int64(len(p)), l.n)
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
		l.n -= k
	}
	return len(p), nil
}
