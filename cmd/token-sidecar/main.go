// Command token-sidecar serves cached Genesys Cloud access tokens to the app
// containers of its pod: GET localhost:8181/token.
//
// This package is the only one that reads the environment. It parses the
// configuration, builds the telemetry providers, wires the upstream clients,
// the cache and the HTTP handlers together, runs the two listeners and shuts
// them down gracefully.
package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// version is stamped at build time (-ldflags "-X main.version=…").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The packages get their providers and propagator passed in; these
	// globals are for code that looks them up anyway. OpenTelemetry reports
	// export failures through its global error handler, whose default
	// writes plain text: make them JSON lines like every other log line.
	errLog := slog.New(newBoundedHandler(slog.NewJSONHandler(os.Stderr, nil)))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		errLog.Warn("opentelemetry", "error", err.Error())
	}))
	// Its internal logger writes plain text straight to os.Stderr by
	// default (not through package log): route it through slog too.
	otel.SetLogger(logr.FromSlogHandler(errLog.With("logger", "opentelemetry").Handler()))
	otel.SetTextMapPropagator(propagation.TraceContext{})
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		// run has logged why, or the flag package has printed the usage.
		os.Exit(1)
	}
}

// errUsage reports that the flags could not be parsed; the flag package has
// already printed why.
var errUsage = errors.New("usage")

// run is the whole program, so that tests can run it with their own
// arguments, environment and output, and stop it by cancelling ctx.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return runWith(ctx, args, getenv, stdout, stderr, nil)
}
