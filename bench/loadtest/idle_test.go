package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRollup(t *testing.T) {
	rollup := []byte(`5645f16a6000-7ffc76390000 ---p 00000000 00:00 0                          [rollup]
Rss:                1692 kB
Pss:                 311 kB
Pss_Dirty:           108 kB
Pss_Anon:            108 kB
Pss_File:            203 kB
`)
	got, err := parseRollup(rollup, "Pss", "Pss_Anon", "Pss_File")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{311 << 10, 108 << 10, 203 << 10}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// Pss_Dirty is not Pss; a missing field is named.
	if _, err := parseRollup(rollup, "Pss_Shmem"); err == nil || !strings.Contains(err.Error(), "Pss_Shmem") {
		t.Errorf("missing field: err %v", err)
	}
	if _, err := parseRollup([]byte("Pss: 12 pages\n"), "Pss"); err == nil {
		t.Error("a value not in kB was accepted")
	}
}
