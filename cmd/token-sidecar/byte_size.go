package main

import (
	"fmt"
	"strconv"
	"strings"
)

// byteSize is a flag.Value of a number of bytes, written as a whole number
// with an optional binary unit: "33554432", "32MiB", "32Mi", "512KiB", "1GiB"
// ("B" alone is bytes). Its zero value is 0 bytes.
type byteSize int64

// byteUnits are the accepted units, longest first so that "MiB" is not
// read as "B".
var byteUnits = []struct {
	suffix string
	shift  uint
}{
	{"KiB", 10}, {"MiB", 20}, {"GiB", 30},
	{"Ki", 10}, {"Mi", 20}, {"Gi", 30},
	{"B", 0},
}

func (s *byteSize) Set(v string) error {
	num, shift := strings.TrimSpace(v), uint(0)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, shift = strings.TrimSpace(rest), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<40)>>shift {
		return fmt.Errorf("want a whole number of bytes up to 1TiB, optionally with KiB, MiB or GiB, got %q", v)
	}
	*s = byteSize(n << shift)
	return nil
}

func (s *byteSize) String() string {
	n := int64(*s)
	switch {
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}
