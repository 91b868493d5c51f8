package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// InstallKeyFile puts data at dir/name as the kubelet updates a mounted
// Secret: a new timestamped directory, the "..data" symlink swapped to it
// with a rename, and dir/name a symlink through "..data". Called again on
// the same dir, it swaps the file's content in one rename. It returns
// dir/name.
func InstallKeyFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	ts := filepath.Join(dir, fmt.Sprintf("..%d", time.Now().UnixNano()))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if _, err := os.Lstat(path); err != nil {
		if err := os.Symlink(filepath.Join("..data", name), path); err != nil {
			t.Fatal(err)
		}
	}
	return path
}
