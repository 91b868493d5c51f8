package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The machine is shared (other engineers build and test on it), so every
// measured run also records how much CPU the rest of the machine used.

// selfCPU is the CPU time this process and its ended children (wrk,
// vegeta; a sidecar counts only once stopped) have used so far.
func selfCPU() time.Duration {
	var self, children syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) != nil || syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children) != nil {
		return -1
	}
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + children.Utime.Nano() + children.Stime.Nano())
}

// machineBusy is the CPU time all CPUs have spent outside idle and iowait
// since boot, from the first line of /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return -1
	}
	var busy int64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return -1
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// loadAvg is the one-minute load average.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// cpuMeter measures, over one run, the CPU used by the sidecar, by this
// load generator and by everything else on the machine.
type cpuMeter struct {
	side                 *sidecar
	start                time.Time
	sidecar, self, total time.Duration
}

func startCPUMeter(s *sidecar) cpuMeter {
	return cpuMeter{side: s, start: time.Now(), sidecar: s.cpuTime(), self: selfCPU(), total: machineBusy()}
}

// cpuUse is CPU time over a run, in cores (CPU seconds per second).
type cpuUse struct {
	Sidecar   float64 `json:"sidecar_cores"`
	Generator float64 `json:"generator_cores"`
	// Other is every other process on the machine: builds and tests of the
	// people sharing it. Anything well above 0 makes the run noisy.
	Other float64 `json:"other_cores"`
	// SidecarTime is the sidecar's CPU time over the run.
	SidecarTime time.Duration `json:"sidecar_cpu_ns"`

	wall, self, other time.Duration
}

func (m cpuMeter) stop() cpuUse {
	side, self, total := m.side.cpuTime()-m.sidecar, selfCPU()-m.self, machineBusy()-m.total
	return cpuUse{SidecarTime: side, self: self, other: max(0, total-side-self), wall: time.Since(m.start)}.withCores()
}

// plus adds the CPU use of another run.
func (u cpuUse) plus(o cpuUse) cpuUse {
	u.SidecarTime += o.SidecarTime
	u.self += o.self
	u.other += o.other
	u.wall += o.wall
	return u.withCores()
}

func (u cpuUse) withCores() cpuUse {
	if secs := u.wall.Seconds(); secs > 0 {
		u.Sidecar, u.Generator, u.Other = u.SidecarTime.Seconds()/secs, u.self.Seconds()/secs, u.other.Seconds()/secs
	}
	return u
}
