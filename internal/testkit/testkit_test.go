package testkit

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallKeyFileSwapsInOneRename(t *testing.T) {
	dir := t.TempDir()
	path := InstallKeyFile(t, dir, "keys.json", []byte("one"))
	if path != filepath.Join(dir, "keys.json") {
		t.Fatalf("path %s", path)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("%s is not a symlink: %v", path, err)
	}
	InstallKeyFile(t, dir, "keys.json", []byte("two"))
	if b, err := os.ReadFile(path); err != nil || string(b) != "two" {
		t.Fatalf("after the swap: %q, %v", b, err)
	}
	if target, _ := os.Readlink(path); target != filepath.Join("..data", "keys.json") {
		t.Errorf("keys.json points at %q, want through ..data", target)
	}
}

func TestTamperJWEFlipsOneBitOfThePart(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	jwe := strings.Join([]string{enc([]byte("hdr")), "", enc([]byte("iv-bytes")), enc([]byte("ciphertext")), enc([]byte("tag"))}, ".")
	got := strings.Split(TamperJWE(jwe, 3), ".")
	want := strings.Split(jwe, ".")
	for i := range want {
		if (got[i] != want[i]) != (i == 3) {
			t.Errorf("part %d: %q, was %q", i, got[i], want[i])
		}
	}
	b, _ := base64.RawURLEncoding.DecodeString(got[3])
	diff := 0
	for i, c := range []byte("ciphertext") {
		for x := b[i] ^ c; x != 0; x &= x - 1 {
			diff++
		}
	}
	if diff != 1 {
		t.Errorf("%d bits differ, want 1", diff)
	}
	defer func() {
		if recover() == nil {
			t.Error("tampering with an empty part did not panic")
		}
	}()
	TamperJWE(jwe, 1)
}
