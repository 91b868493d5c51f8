package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildSidecar builds ./cmd/token-sidecar of the module into dir and returns
// the binary's path.
func buildSidecar(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the token-sidecar module: run from the repository, or pass -binary")
	}
	bin := filepath.Join(dir, "token-sidecar")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/token-sidecar")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/token-sidecar: %w\n%s", err, out)
	}
	return bin, nil
}

// sidecarOptions start one sidecar process.
type sidecarOptions struct {
	binary string
	fakes  *fakes
	// args are added to the listeners, upstream URLs and log level.
	args []string
	// logLevel is the sidecar's -log-level. It must log at info at least:
	// the "token-sidecar started" line, which names the ports, is at info.
	logLevel string
	// log, if not nil, receives every line the sidecar writes to stderr.
	log io.Writer
	// cpus, if not empty, pins the sidecar to these CPUs (taskset -c), so
	// that it does not share them with the load generator.
	cpus string
	// procs, if positive, is the sidecar's GOMAXPROCS.
	procs int
	// gctrace sets GODEBUG=gctrace=1, so that the live heap after each GC
	// can be read from the sidecar's stderr.
	gctrace bool
	// extraEnv is added to the sidecar's environment (NAME=value).
	extraEnv []string
}

// sidecar is a running token-sidecar process.
type sidecar struct {
	cmd       *exec.Cmd
	pid       int
	tokenURL  string // http://127.0.0.1:port
	adminURL  string
	exited    chan struct{}
	waitErr   error
	stderrEOF chan struct{}

	mu       sync.Mutex
	tail     []string // the last stderr lines, for error messages
	warnings int      // log lines at warn or above
	gcs      []gcCycle
}

// gcCycle is one line of GODEBUG=gctrace=1.
type gcCycle struct {
	n      int
	liveMB int // heap marked live by that cycle, in MB
}

// startSidecar starts the binary on loopback ports, pointed at the fakes, and
// waits for its "token-sidecar started" line.
func startSidecar(ctx context.Context, o sidecarOptions) (*sidecar, error) {
	args := append([]string{
		"-listen", "127.0.0.1:0",
		"-admin-listen", "127.0.0.1:0",
		"-log-level", o.logLevel,
	}, o.args...)
	cmd := exec.Command(o.binary, args...)
	if o.cpus != "" {
		// taskset execs the binary: the PID stays the sidecar's.
		cmd = exec.Command("taskset", append([]string{"-c", o.cpus, o.binary}, args...)...)
	}
	cmd.Env = sidecarEnv(o)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", o.binary, err)
	}
	s := &sidecar{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{}), stderrEOF: make(chan struct{})}
	started := make(chan [2]string, 1)
	go s.readStderr(stderr, o.log, started)
	go func() {
		<-s.stderrEOF // Wait closes the pipe: read it to the end first
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()

	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	select {
	case addrs := <-started:
		s.tokenURL, s.adminURL = "http://"+addrs[0], "http://"+addrs[1]
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("token-sidecar exited before starting (%v):\n%s", s.waitErr, s.stderrTail())
	case <-timer.C:
	case <-ctx.Done():
	}
	s.stop()
	return nil, fmt.Errorf("token-sidecar did not start in time:\n%s", s.stderrTail())
}

// sidecarEnv is the tool's environment without any setting of the sidecar
// or the Go runtime that would skew the measure, plus the fakes' URLs.
func sidecarEnv(o sidecarOptions) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "SIDECAR_") || strings.HasPrefix(name, "OTEL_") ||
			name == "GODEBUG" || name == "GOGC" || name == "GOMEMLIMIT" || name == "GOMAXPROCS" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"SIDECAR_TENANT_SERVICE_URL="+o.fakes.tenants.URL(),
		"SIDECAR_GENESYS_LOGIN_URL="+o.fakes.login.URL(),
	)
	if o.procs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(o.procs))
	}
	if o.gctrace {
		env = append(env, "GODEBUG=gctrace=1")
	}
	return append(env, o.extraEnv...)
}

// gcLine matches the heap sizes of a gctrace line:
// "gc 12 @3.1s 1%: … ms cpu, 11->12->6 MB, 13 MB goal, …".
var gcLine = regexp.MustCompile(`^gc (\d+) @.* (\d+)->(\d+)->(\d+) MB`)

// readStderr follows the sidecar's log: it reports the started line's
// addresses once, and keeps the tail, the warning count and GC cycles.
func (s *sidecar) readStderr(r io.Reader, log io.Writer, started chan<- [2]string) {
	defer close(s.stderrEOF)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if log != nil {
			_, _ = log.Write(append(line, '\n'))
		}
		if m := gcLine.FindSubmatch(line); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			live, _ := strconv.Atoi(string(m[4]))
			s.mu.Lock()
			s.gcs = append(s.gcs, gcCycle{n: n, liveMB: live})
			s.mu.Unlock()
			continue
		}
		var rec struct {
			Level     string `json:"level"`
			Msg       string `json:"msg"`
			TokenAddr string `json:"token_addr"`
			AdminAddr string `json:"admin_addr"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "token-sidecar started" {
			started <- [2]string{rec.TokenAddr, rec.AdminAddr}
		}
		s.mu.Lock()
		if rec.Level == "WARN" || rec.Level == "ERROR" {
			s.warnings++
		}
		s.tail = append(s.tail, string(line))
		if len(s.tail) > 20 {
			s.tail = s.tail[len(s.tail)-20:]
		}
		s.mu.Unlock()
	}
}

func (s *sidecar) stderrTail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.tail, "\n")
}

// warningCount is the number of log lines at warn level or above so far.
func (s *sidecar) warningCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.warnings
}

// gcCount is the number of GC cycles the sidecar has traced.
func (s *sidecar) gcCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.gcs)
}

// lastGC is the last traced GC cycle; ok is false before the first.
func (s *sidecar) lastGC() (c gcCycle, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.gcs) == 0 {
		return gcCycle{}, false
	}
	return s.gcs[len(s.gcs)-1], true
}

// stop sends SIGTERM and waits for the exit, killing the process if the
// graceful shutdown takes longer than its 10 s bound plus slack.
func (s *sidecar) stop() error {
	select {
	case <-s.exited:
		return s.waitErr
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return s.waitErr
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("token-sidecar did not stop within 15 s of SIGTERM; killed")
	}
}

// procStatus reads one "Name: value kB" field of /proc/PID/status.
func (s *sidecar) procStatus(field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(name) != field {
			continue
		}
		f := strings.Fields(string(value))
		if len(f) == 0 {
			break
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, s.pid)
}

// rssBytes is the sidecar's resident set size (VmRSS).
func (s *sidecar) rssBytes() int64 {
	kib, err := s.procStatus("VmRSS")
	if err != nil {
		return -1
	}
	return kib << 10
}

// threads is the sidecar's number of OS threads.
func (s *sidecar) threads() int64 {
	n, err := s.procStatus("Threads")
	if err != nil {
		return -1
	}
	return n
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuTime is the user plus system CPU time the sidecar has used, to 10 ms.
func (s *sidecar) cpuTime() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	if err != nil {
		return -1
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// metrics reads the admin /metrics: each metric name with the sum of its
// samples over all label sets (for a gauge with only scope labels, its
// value). ok is false if the sidecar serves no /metrics.
func (s *sidecar) metrics(ctx context.Context, client *http.Client) (m map[string]float64, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.adminURL+"/metrics", nil)
	if err != nil {
		return nil, false
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, false
	}
	m = map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			// Label values may hold spaces; the value follows the last '}'.
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			name, rest = line[:i], line[j+1:]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			m[name] += v
		}
	}
	return m, true
}

// snapshot is the sidecar's footprint at one moment.
type snapshot struct {
	RSS     int64 `json:"rss_bytes"`
	Threads int64 `json:"os_threads"`
	// Goroutines is go_goroutines from /metrics, -1 when not served.
	Goroutines int64 `json:"goroutines"`
	// HeapBytes is the Go heap allocated (live and not yet swept) from
	// /metrics, -1 when not served.
	HeapBytes int64 `json:"heap_bytes"`
	// Entries is the cache's entry count from /metrics, -1 when not served.
	Entries  int64         `json:"cache_entries"`
	Upstream upstreamCalls `json:"upstream_calls"`
}

// heapMetrics are the names under which the heap in use may be exported,
// by the Prometheus Go collector or the OpenTelemetry runtime metrics.
var heapMetrics = []string{"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes"}

// goroutineMetrics likewise for the goroutine count.
var goroutineMetrics = []string{"go_goroutines", "go_goroutine_count"}

// entriesMetrics likewise for the cache's entry count.
var entriesMetrics = []string{"token_sidecar_cache_entries"}

// firstMetric is the value of the first of names that m has, else -1.
func firstMetric(m map[string]float64, names []string) int64 {
	for _, name := range names {
		if v, ok := m[name]; ok {
			return int64(v)
		}
	}
	return -1
}

func (s *sidecar) snapshot(ctx context.Context, client *http.Client, f *fakes) snapshot {
	snap := snapshot{RSS: s.rssBytes(), Threads: s.threads(), Goroutines: -1, HeapBytes: -1, Entries: -1, Upstream: f.calls()}
	if m, ok := s.metrics(ctx, client); ok {
		snap.Goroutines = firstMetric(m, goroutineMetrics)
		snap.HeapBytes = firstMetric(m, heapMetrics)
		snap.Entries = firstMetric(m, entriesMetrics)
	}
	return snap
}
