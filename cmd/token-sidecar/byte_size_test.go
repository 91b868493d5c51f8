package main

import "testing"

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "33554432": 32 << 20, "32MiB": 32 << 20, "32Mi": 32 << 20, "512KiB": 512 << 10,
		"512 Ki": 512 << 10, "1GiB": 1 << 30, "100B": 100, "1024GiB": 1 << 40,
	} {
		var s byteSize
		if err := s.Set(in); err != nil || int64(s) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, s, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "32MB", "32 M", "1025GiB", "MiB", "9223372036854775807"} {
		var s byteSize
		if err := s.Set(in); err == nil {
			t.Errorf("Set(%q) accepted: %d", in, s)
		}
	}
	for v, want := range map[byteSize]string{0: "0", 32 << 20: "32MiB", 1536: "1536", 8 << 10: "8KiB", 100: "100"} {
		if got := v.String(); got != want {
			t.Errorf("String(%d) = %q, want %q", v, got, want)
		}
	}
}
