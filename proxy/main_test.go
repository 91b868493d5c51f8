package proxy

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind, e.g. a
// handler still waiting on a cache after its request timed out.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
