package main

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// The standard library logs through package log: net/http's transport its
// "Unsolicited response received on idle HTTP channel starting with %q"
// (the bytes an upstream sent past its Content-Length: a token, a secret),
// http.Server and httputil.ReverseProxy their ErrorLog. Those lines would
// be plain text among the JSON lines, and quote what a peer sent. Every one
// of them goes through stdlibWriter instead: a JSON line at WARN whose
// message is fixed text.

// knownStdlibMessage maps the messages of the standard library that
// matter here, by prefix, to fixed text without their payload.
func knownStdlibMessage(msg string) (string, bool) {
	has := func(prefix string) bool { return strings.HasPrefix(msg, prefix) }
	switch {
	case has("Unsolicited response received on idle HTTP channel"):
		return "net/http: an upstream sent bytes on an idle connection, past its last answer; connection closed (bytes not logged)", true
	case has("httputil: ReverseProxy read error during body copy"):
		return "httputil: reading the API's answer failed while copying it", true
	case has("http: proxy error"):
		return "httputil: the API request failed", true
	case has("http: TLS handshake error"):
		return "http: TLS handshake error", true
	case has("http: panic serving"):
		return "http: panic serving a request", true
	case has("http: superfluous response.WriteHeader call"):
		return "http: superfluous response.WriteHeader call", true
	case has("http: Accept error"):
		return "http: accept error; retrying", true
	case has("http: invalid Content-Length"):
		return "http: a handler set an invalid Content-Length", true
	case has("http: WriteHeader called with both Transfer-Encoding"):
		return "http: a handler set both Transfer-Encoding and Content-Length", true
	}
	return "", false
}

// maxStdlibMessage bounds the part of an unknown message that is kept.
const maxStdlibMessage = 128

// stdlibMessage is the text logged for a message of the standard library:
// the fixed text of a known one; for any other, the part before its first
// ": ", quote or ';' (Go's messages put what they quote after those), at
// most maxStdlibMessage bytes.
func stdlibMessage(msg string) string {
	msg = strings.TrimSpace(msg)
	if text, ok := knownStdlibMessage(msg); ok {
		return text
	}
	if i := strings.IndexAny(msg, "\"';\n"); i >= 0 {
		msg = msg[:i]
	}
	if i := strings.Index(msg, ": "); i >= 0 {
		msg = msg[:i]
	}
	msg = strings.TrimSpace(msg)
	if len(msg) > maxStdlibMessage {
		msg = msg[:maxStdlibMessage]
	}
	if msg == "" {
		return "standard library log message (not shown)"
	}
	return msg
}

// stdlibWriter is the output of a *log.Logger: each Write is one message.
// It is safe for concurrent use if its logger is.
type stdlibWriter struct {
	logger *slog.Logger
	source string // the "logger" attribute: "stdlib", "http.Server"…
}

func (w *stdlibWriter) Write(p []byte) (int, error) {
	w.logger.LogAttrs(context.Background(), slog.LevelWarn, stdlibMessage(string(p)), slog.String("logger", w.source))
	return len(p), nil
}

// newStdlibLogger is a *log.Logger (an http.Server's ErrorLog…) that logs
// through logger, as stdlibWriter does; source names it in the line.
func newStdlibLogger(logger *slog.Logger, source string) *log.Logger {
	return log.New(&stdlibWriter{logger: logger, source: source}, "", 0)
}

// routeStdlibLog points package log's default logger at logger and returns
// what restores the previous output, prefix and flags. log.Default is one
// per process: with several runs at once (tests), the latest one's logger
// gets the lines, and a run restores only if no later one took over.
func routeStdlibLog(logger *slog.Logger) (restore func()) {
	w := &stdlibWriter{logger: logger, source: "stdlib"}
	prevOut, prevPrefix, prevFlags := log.Writer(), log.Prefix(), log.Flags()
	log.SetOutput(w)
	log.SetPrefix("")
	log.SetFlags(0)
	return func() {
		if cur, ok := log.Writer().(*stdlibWriter); ok && cur == w {
			log.SetOutput(prevOut)
			log.SetPrefix(prevPrefix)
			log.SetFlags(prevFlags)
		}
	}
}
