package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/token-sidecar/token-sidecar/upstream"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// credentialKeys are the keys that open encrypted credentials: those of
// -credential-keys-file, watched for changes, or with -demo and no file the
// demo's in-memory key. Zero keys (no file, no demo) is the default: plain
// credentials only.
type credentialKeys struct {
	file   *upstream.CredentialKeyFile // nil: no file
	static *upstream.CredentialKeys    // the demo's, when no file

	reloads metric.Int64Counter
	stop    context.CancelFunc
	done    sync.WaitGroup
}

// loadCredentialKeys reads -credential-keys-file, logs which key IDs it
// holds and registers the key metrics. A file that cannot be read or
// parsed is an error: the sidecar must not start without the keys it was
// told to use.
func loadCredentialKeys(cfg config, demo *upstreamtest.Demo, logger *slog.Logger, mp metric.MeterProvider) (*credentialKeys, error) {
	ck := &credentialKeys{stop: func() {}}
	switch {
	case cfg.CredentialKeysFile != "":
		f, err := upstream.LoadCredentialKeyFile(cfg.CredentialKeysFile)
		if err != nil {
			return nil, fmt.Errorf("-credential-keys-file: %w", err)
		}
		ck.file = f
		logger.Info("credential keys loaded", "file", f.Path(), "kids", f.Keys().KeyIDs())
	case demo != nil:
		ks, err := upstream.ParseCredentialKeys(upstreamtest.JWKSet(demo.CredentialKey))
		if err != nil {
			return nil, fmt.Errorf("demo credential key: %w", err)
		}
		ck.static = ks
		logger.Info("credential keys loaded", "file", "", "kids", ks.KeyIDs(), "demo", true)
	default:
		return ck, nil
	}
	m := mp.Meter("github.com/token-sidecar/token-sidecar/cmd/token-sidecar")
	var err error
	ck.reloads, err = m.Int64Counter("token_sidecar.credential.keys.reloads",
		metric.WithUnit("{reload}"),
		metric.WithDescription("Changes of -credential-keys-file seen, by outcome: ok (its keys are in use) or error (the previous keys stay)."))
	if err != nil {
		return nil, err
	}
	_, err = m.Int64ObservableGauge("token_sidecar.credential.keys",
		metric.WithUnit("{key}"),
		metric.WithDescription("1 for each key ID (kid) that opens encrypted credentials now. Never key material."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			for _, kid := range ck.keys().KeyIDs() {
				o.Observe(1, metric.WithAttributes(attribute.String("kid", kid)))
			}
			return nil
		}))
	if err != nil {
		return nil, err
	}
	return ck, nil
}

// keys returns the keys in use; nil when there are none.
func (ck *credentialKeys) keys() *upstream.CredentialKeys {
	if ck.file != nil {
		return ck.file.Keys()
	}
	return ck.static
}

// decryption is the Tenant Service client's setting.
func (ck *credentialKeys) decryption(require bool) upstream.CredentialDecryption {
	return upstream.CredentialDecryption{Keys: ck.keys, RequireEncrypted: require}
}

// watch polls the key file until close, logging every change: the new key
// IDs, or why the file was not used and which keys stay.
func (ck *credentialKeys) watch(ctx context.Context, cfg config, logger *slog.Logger) {
	if ck.file == nil {
		return
	}
	ctx, ck.stop = context.WithCancel(ctx)
	ck.done.Add(1)
	go func() {
		defer ck.done.Done()
		ck.file.Watch(ctx, cfg.CredentialKeysPollInterval, func(r upstream.KeyFileReload) {
			if r.Err != nil {
				ck.reloads.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", "error")))
				logger.Error("credential keys file not reloaded; the previous keys stay in use",
					"error", r.Err.Error(), "kids", r.KeyIDs)
				return
			}
			ck.reloads.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", "ok")))
			logger.Info("credential keys reloaded", "file", ck.file.Path(), "kids", r.KeyIDs)
		})
	}()
}

// close stops the watcher and waits for it.
func (ck *credentialKeys) close() {
	ck.stop()
	ck.done.Wait()
}
