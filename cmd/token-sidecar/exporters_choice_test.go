package main

import (
	"context"
	"strings"
	"time"
)

// exporterChoice builds the telemetry that env asks for, through getenv,
// and says what it chose: the exporters joined by ",", or "error: " and
// the error. The exporters' own settings come from the process
// environment.
func exporterChoice(env map[string]string) string {
	getenv := func(k string) string { return env[k] }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tel, err := newTelemetry(ctx, getenv, discardLogger(), telemetryOptions{})
	if err != nil {
		return "error: " + err.Error()
	}
	_ = tel.shutdown(ctx)
	return strings.Join(tel.exporters, ",")
}

// choiceIs reports whether exporterChoice's got is want: the same
// exporters, or, for want "error: …", an error containing ….
func choiceIs(got, want string) bool {
	if w, ok := strings.CutPrefix(want, "error: "); ok {
		return strings.HasPrefix(got, "error: ") && strings.Contains(got, w)
	}
	return got == want
}
