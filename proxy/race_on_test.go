//go:build race

package proxy

// raceEnabled: the race detector drops sync.Pool items at random, so
// allocation counts of pooled paths are not exact under it.
const raceEnabled = true
