package main

import (
	"errors"
	"log/slog"
	"math"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// memoryLimitRatio is the share of the container's memory limit that becomes
// Go's soft memory limit: the garbage collector works harder as the heap
// nears it, instead of the kernel's OOM killer ending the pod's token supply.
// The rest is headroom for memory the Go runtime does not account.
const memoryLimitRatio = 0.9

// memoryLimit is the soft memory limit in force after setMemoryLimit, for the
// start log line.
type memoryLimit struct {
	// From says where it comes from: "GOMEMLIMIT" (set by the operator, left
	// as the runtime read it), "cgroup" (memoryLimitRatio of the cgroup's
	// limit), or "none" (no cgroup limit: Go's default, no soft limit).
	From string
	// Bytes is the limit in force; math.MaxInt64 means none.
	Bytes int64
	// CgroupBytes is the cgroup's limit when From is "cgroup", else 0.
	CgroupBytes uint64
}

// LogValue logs the limit as a group; Bytes only when there is a limit.
func (m memoryLimit) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("from", m.From)}
	if m.Bytes != math.MaxInt64 {
		attrs = append(attrs, slog.Int64("bytes", m.Bytes))
	}
	if m.CgroupBytes != 0 {
		attrs = append(attrs, slog.Uint64("cgroup_bytes", m.CgroupBytes))
	}
	return slog.GroupValue(attrs...)
}

// memoryLimitHooks replace, for tests, where setMemoryLimit reads the
// container's limit and what it sets. Zero fields mean the real ones:
// memlimit.FromCgroup and debug.SetMemoryLimit.
type memoryLimitHooks struct {
	provider memlimit.Provider
	set      func(int64) int64
}

// setMemoryLimit sets Go's soft memory limit to memoryLimitRatio of the
// cgroup's memory limit, read by provider, through set (debug.SetMemoryLimit
// semantics: a negative value only reads). It leaves the limit alone when
// GOMEMLIMIT is set (whatever its value, "off" included: the operator
// decided) and when there is no cgroup limit or no cgroup at all. An error
// reading the cgroup leaves it alone too, and is returned for a warning: the
// sidecar runs without a soft limit rather than not at all.
func setMemoryLimit(getenv func(string) string, provider memlimit.Provider, set func(int64) int64) (memoryLimit, error) {
	current := set(-1)
	if getenv("GOMEMLIMIT") != "" {
		return memoryLimit{From: "GOMEMLIMIT", Bytes: current}, nil
	}
	cgroup, err := provider()
	switch {
	case errors.Is(err, memlimit.ErrNoLimit), errors.Is(err, memlimit.ErrCgroupsNotSupported):
		return memoryLimit{From: "none", Bytes: current}, nil
	case err != nil:
		return memoryLimit{From: "none", Bytes: current}, err
	}
	soft, err := memlimit.ApplyRatio(memlimit.Limit(cgroup), memoryLimitRatio)()
	if err != nil {
		return memoryLimit{From: "none", Bytes: current}, err
	}
	limit := int64(min(soft, math.MaxInt64))
	set(limit)
	return memoryLimit{From: "cgroup", Bytes: limit, CgroupBytes: cgroup}, nil
}

// applyMemoryLimit is setMemoryLimit with the real hooks unless h replaces
// them, logging a failure as a warning.
func applyMemoryLimit(getenv func(string) string, h memoryLimitHooks, logger *slog.Logger) memoryLimit {
	if h.provider == nil {
		h.provider = memlimit.FromCgroup
	}
	if h.set == nil {
		h.set = debug.SetMemoryLimit
	}
	m, err := setMemoryLimit(getenv, h.provider, h.set)
	if err != nil {
		logger.Warn("memory limit not set: the cgroup's limit could not be read", "error", err.Error())
	}
	return m
}
