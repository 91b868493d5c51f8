package upstream

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// CredentialKeyFile is a JWK Set file (-credential-keys-file) whose keys
// are re-read when its content changes. Kubernetes updates a mounted Secret
// in place by swapping a symlink, so the file is polled by path (content
// compared, not only its inode or mtime): a new file at the path, a
// rewritten one and a swapped symlink are all seen at the next poll.
//
// Keys is safe for concurrent use with Reload and Watch.
type CredentialKeyFile struct {
	path string
	keys atomic.Pointer[CredentialKeys]

	mu   sync.Mutex // serialises Reload
	last [sha256.Size]byte
	// readErr is the text of the last read that failed, "" after a read
	// that worked: an unreadable file is reported once, not at every poll.
	readErr string
}

// KeyFileReload is what one poll of a CredentialKeyFile found. It holds
// key IDs, never key material.
type KeyFileReload struct {
	// Changed reports that the file's content differs from the last one
	// read; a poll that finds the same content reports nothing.
	Changed bool
	// KeyIDs are the key IDs in use after the poll: the new file's when it
	// parsed, else the previous ones.
	KeyIDs []string
	// Err is why the new content was not used (unreadable, not a valid
	// JWK Set); the previous keys stay in use. It names the file and the
	// problem, never key material.
	Err error
}

// LoadCredentialKeyFile reads and parses the file at path. A file that
// cannot be read or parsed is an error, for the sidecar to stop on.
func LoadCredentialKeyFile(path string) (*CredentialKeyFile, error) {
	f := &CredentialKeyFile{path: path}
	if r := f.Reload(); r.Err != nil {
		return nil, r.Err
	}
	return f, nil
}

// Path is the file's path.
func (f *CredentialKeyFile) Path() string { return f.path }

// Keys returns the keys in use: those of the last content that parsed.
func (f *CredentialKeyFile) Keys() *CredentialKeys { return f.keys.Load() }

// Reload reads the file once. When its content changed and parses, its
// keys replace the ones in use; when it changed and does not parse, the
// previous keys stay and the error is reported once for that content.
func (f *CredentialKeyFile) Reload() KeyFileReload {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := readKeyFile(f.path)
	defer clear(data)
	if err != nil {
		// An unreadable file (mid-swap, removed) is reported once for each
		// new reason; its content is unknown, so the next read that works
		// is compared with the last content that was read.
		if err.Error() == f.readErr {
			return KeyFileReload{KeyIDs: f.Keys().KeyIDs()}
		}
		f.readErr = err.Error()
		return KeyFileReload{Changed: true, KeyIDs: f.Keys().KeyIDs(),
			Err: fmt.Errorf("credential keys file %s: %w", f.path, err)}
	}
	f.readErr = ""
	sum := sha256.Sum256(data)
	if f.keys.Load() != nil && sum == f.last {
		return KeyFileReload{KeyIDs: f.Keys().KeyIDs()}
	}
	f.last = sum
	ks, err := ParseCredentialKeys(data)
	if err != nil {
		return KeyFileReload{Changed: true, KeyIDs: f.Keys().KeyIDs(),
			Err: fmt.Errorf("credential keys file %s: %w", f.path, err)}
	}
	f.keys.Store(ks)
	return KeyFileReload{Changed: true, KeyIDs: ks.KeyIDs()}
}

// readKeyFile reads at most MaxCredentialKeysBytes+1 bytes, so an
// oversized file is refused without reading it all.
func readKeyFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxCredentialKeysBytes+1))
	if err != nil {
		clear(data)
		return nil, err
	}
	return data, nil
}

// Watch polls the file every interval until ctx ends, calling report
// (from Watch's goroutine) after every poll that found a change or an
// error. It returns when ctx ends; a non-positive interval returns at once.
func (f *CredentialKeyFile) Watch(ctx context.Context, interval time.Duration, report func(KeyFileReload)) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if r := f.Reload(); r.Changed && report != nil {
				report(r)
			}
		}
	}
}
