package sharedcache

import (
	"log/slog"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) {
	// go-redis logs through a process-wide logger; keep its dial failures
	// (expected here) out of the test output.
	redis.SetLogger(RedisLogger{Logger: slog.New(slog.DiscardHandler)})
	os.Exit(m.Run())
}
