package sharedcache

import (
	"crypto/sha256"
	"os"
	"time"
)

// watchKeys re-reads the key file every KeyPollInterval and swaps in its keys
// when its content has changed (a Kubernetes Secret volume is updated by
// swapping a symlink, so the content, not the mtime, is compared). A file
// that no longer reads or parses is logged once per change and the previous
// keys stay.
func (s *Source) watchKeys(sum [sha256.Size]byte) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.KeyPollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		data, err := os.ReadFile(s.cfg.KeyFile)
		if err != nil {
			next := sha256.Sum256([]byte("unreadable: " + err.Error()))
			if next != sum {
				s.logger.Error("shared cache key file unreadable; keeping the previous keys", "file", s.cfg.KeyFile, "error", err.Error())
				sum = next
			}
			continue
		}
		next := sha256.Sum256(data)
		if next == sum {
			continue
		}
		sum = next
		ring, err := parseKeys(data)
		if err != nil {
			s.logger.Error("shared cache key file changed but does not parse; keeping the previous keys", "file", s.cfg.KeyFile, "error", err.Error())
			continue
		}
		s.ring.Store(ring)
		s.logger.Info("shared cache keys reloaded", "file", s.cfg.KeyFile, "keys", len(ring.keys))
	}
}
