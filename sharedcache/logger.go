package sharedcache

import (
	"context"
	"fmt"
	"log/slog"
)

// RedisLogger adapts a *slog.Logger to go-redis's internal logger
// (redis.SetLogger, a process-wide setting the caller owns), so that the
// client's own complaints — a failed dial, a dropped connection — are JSON
// lines at warn level like every other log line. go-redis's messages name
// the server's address, never its password.
type RedisLogger struct{ Logger *slog.Logger }

// Printf implements go-redis's internal.Logging.
func (l RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.Logger.WarnContext(ctx, "redis client", "message", fmt.Sprintf(format, v...))
}
