package main

import (
	"log"
	"log/slog"
	"strings"
	"testing"
)

// TestStdlibLogIsJSONWithoutPayload: package log's lines — net/http's
// "Unsolicited response" quotes what an upstream sent past its
// Content-Length — become JSON lines with fixed text.
func TestStdlibLogIsJSONWithoutPayload(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(newBoundedHandler(slog.NewJSONHandler(&buf, nil)))
	restore := routeStdlibLog(logger)
	const secret = "tok-9d8a7c6b5e4f"
	log.Printf("Unsolicited response received on idle HTTP channel starting with %q; err=%v", `","access_token":"`+secret+`"}`, nil)
	log.Printf("some library: parse error near %q", secret)
	log.Printf("other: bad line: %s", secret)
	newStdlibLogger(logger, "http.Server").Printf("http: TLS handshake error from 10.0.0.1:5555: %s", secret)
	restore()

	out := buf.String()
	lines := checkLines(t, out)
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4:\n%s", len(lines), out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("the payload reached the log:\n%s", out)
	}
	for i, want := range []string{"net/http: an upstream sent bytes on an idle connection", "some library", "other", "http: TLS handshake error"} {
		if msg, _ := lines[i]["msg"].(string); !strings.HasPrefix(msg, want) || lines[i]["level"] != "WARN" {
			t.Errorf("line %d: %v; want a WARN starting %q", i, lines[i], want)
		}
	}
	if lines[3]["logger"] != "http.Server" {
		t.Errorf("logger = %v", lines[3]["logger"])
	}
	if _, ok := log.Writer().(*stdlibWriter); ok {
		t.Error("restore left package log routed")
	}
}
