package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// checkLines fails unless every line of out is a JSON object of at most
// maxLogLine bytes; it returns the decoded lines.
func checkLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if len(line) > maxLogLine {
			t.Errorf("a log line of %d bytes: %.200s…", len(line), line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("not a JSON line (%v): %.200s", err, line)
			continue
		}
		lines = append(lines, m)
	}
	return lines
}

func TestBoundedHandlerKeepsEveryLineWithin8KiB(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(newTraceLogHandler(newBoundedHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	huge := strings.Repeat("r\"\\<\x00é", 200_000)
	many := make([]any, 0, 200)
	for i := range 100 {
		many = append(many, strings.Repeat("k", i+1), strings.Repeat("v", 300))
	}
	var group []any
	for range 100 {
		group = append(group, slog.String(strings.Repeat("g", 100), huge))
	}
	logger.Info("a huge string", "region", huge, "tenant", "acme", "status", 502)
	logger.Info(huge, "message", "was huge")
	logger.Warn("an error", "error", errors.New(huge), "tenant", "acme")
	logger.Warn("a slice", "exporters", []string{huge, huge})
	logger.Warn("many attributes", many...)
	logger.Warn("a group", slog.Group("region", group...), "tenant", "acme")
	logger.Warn("a huge key", strings.Repeat("k", 1<<20), "v")
	logger.With("baked", huge, "more", huge).WithGroup(huge).Warn("baked", "tenant", "acme", "value", huge)
	logger.Info("small", "tenant", "acme", "exporters", []string{"traces: otlp"})

	lines := checkLines(t, buf.String())
	if len(lines) != 9 {
		t.Fatalf("%d lines, want 9", len(lines))
	}
	if lines[0]["tenant"] != "acme" || lines[0]["status"] != float64(502) || !strings.HasSuffix(lines[0]["region"].(string), truncatedMark) {
		t.Errorf("the small attributes of a line with a huge one were not kept: %v", lines[0])
	}
	if lines[2]["tenant"] != "acme" {
		t.Errorf("tenant lost: %v", lines[2])
	}
	if lines[4]["log_attrs_dropped"] != float64(100-maxLogAttrs) {
		t.Errorf("log_attrs_dropped = %v", lines[4]["log_attrs_dropped"])
	}
	if last := lines[8]; last["tenant"] != "acme" || last["exporters"].([]any)[0] != "traces: otlp" {
		t.Errorf("a small line was changed: %v", last)
	}
}

func TestCutString(t *testing.T) {
	for _, s := range []string{"", "short", strings.Repeat("é", 100), strings.Repeat("\x00", 100), strings.Repeat("a", 100) + "\xff\xfe"} {
		for _, limit := range []int{30, 50, 64} {
			got := cutString(s, limit)
			if jsonCost(got) > limit && got != truncatedMark {
				t.Errorf("cutString(%q, %d) = %q costs %d", s, limit, got, jsonCost(got))
			}
			if got != s && !strings.HasSuffix(got, truncatedMark) {
				t.Errorf("cutString(%q, %d) = %q has no mark", s, limit, got)
			}
		}
	}
}
