package main

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// fakeMemoryLimit records what setMemoryLimit asks of the runtime, so that
// no test changes the test process's own soft memory limit.
type fakeMemoryLimit struct {
	current int64 // what debug.SetMemoryLimit(-1) would answer
	set     []int64
}

func (f *fakeMemoryLimit) setMemoryLimit(limit int64) int64 {
	prev := f.current
	if limit >= 0 {
		f.set = append(f.set, limit)
		f.current = limit
	}
	return prev
}

func TestSetMemoryLimit(t *testing.T) {
	const gib = 1 << 30
	noCall := func() (uint64, error) { t.Error("the cgroup was read although GOMEMLIMIT is set"); return 0, nil }
	for _, tc := range []struct {
		name     string
		env      map[string]string
		provider memlimit.Provider
		want     memoryLimit
		wantSet  []int64
		wantErr  bool
	}{
		{name: "cgroup limit: 90 % of it", provider: memlimit.Limit(2 * gib),
			want: memoryLimit{From: "cgroup", Bytes: 2 * gib * 9 / 10, CgroupBytes: 2 * gib}, wantSet: []int64{2 * gib * 9 / 10}},
		{name: "GOMEMLIMIT set: untouched", env: map[string]string{"GOMEMLIMIT": "100MiB"}, provider: noCall,
			want: memoryLimit{From: "GOMEMLIMIT", Bytes: math.MaxInt64}},
		{name: "GOMEMLIMIT off: untouched", env: map[string]string{"GOMEMLIMIT": "off"}, provider: noCall,
			want: memoryLimit{From: "GOMEMLIMIT", Bytes: math.MaxInt64}},
		{name: "no cgroup limit: no-op", provider: func() (uint64, error) { return 0, memlimit.ErrNoLimit },
			want: memoryLimit{From: "none", Bytes: math.MaxInt64}},
		{name: "no cgroups at all: no-op", provider: func() (uint64, error) { return 0, memlimit.ErrCgroupsNotSupported },
			want: memoryLimit{From: "none", Bytes: math.MaxInt64}},
		{name: "unreadable cgroup: no-op and an error", provider: func() (uint64, error) { return 0, errors.New("permission denied") },
			want: memoryLimit{From: "none", Bytes: math.MaxInt64}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeMemoryLimit{current: math.MaxInt64}
			got, err := setMemoryLimit(func(k string) string { return tc.env[k] }, tc.provider, f.setMemoryLimit)
			if (err != nil) != tc.wantErr {
				t.Errorf("error %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if len(f.set) != len(tc.wantSet) || (len(f.set) > 0 && f.set[0] != tc.wantSet[0]) {
				t.Errorf("set %v, want %v", f.set, tc.wantSet)
			}
		})
	}
}

// TestStartLogNamesTheMemoryLimit: through run(), the "token-sidecar
// started" line says which soft memory limit is in force and where it came
// from.
func TestStartLogNamesTheMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"cgroup", nil, `"memory_limit":{"from":"cgroup","bytes":120795955,"cgroup_bytes":134217728}`},
		{"GOMEMLIMIT", map[string]string{"GOMEMLIMIT": "64MiB"}, `"memory_limit":{"from":"GOMEMLIMIT","bytes":67108864}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeMemoryLimit{current: math.MaxInt64}
			if tc.env != nil {
				f.current = 64 * mib // as the runtime would have read GOMEMLIMIT
			}
			env := map[string]string{"SIDECAR_DEMO": "true"}
			for k, v := range tc.env {
				env[k] = v
			}
			s := startSidecarWith(t, env, []runOption{func(o *runOptions) {
				o.memoryLimit = memoryLimitHooks{provider: memlimit.Limit(128 * mib), set: f.setMemoryLimit}
			}})
			var started string
			for _, line := range strings.Split(s.stderr.String(), "\n") {
				if strings.Contains(line, `"msg":"token-sidecar started"`) {
					started = line
				}
			}
			if !json.Valid([]byte(started)) || !strings.Contains(started, tc.want) {
				t.Errorf("start line %q lacks %s", started, tc.want)
			}
		})
	}
}
