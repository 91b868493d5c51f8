// Command connflood measures what idle and half-sent connections cost a
// built token-sidecar, and whether new clients still get through, for the
// figures of bench/README.md (issue 10, "Memory and connections"):
//
//   - proxy-bodies: RSS with N /proxy/ requests that announce a 1 MiB body
//     and send one byte;
//   - admin-idle: RSS and the latency of probes (/healthz, /readyz,
//     /metrics on new connections) with N idle keep-alive connections to
//     the admin listener, re-opened as the sidecar closes them;
//   - token-idle: the latency of GET /token for a new client with N idle
//     keep-alive connections to the token listener.
//
// It starts the binary with -demo on 127.0.0.1 ports (nothing leaves
// loopback), stops it with SIGTERM, and every loop is bounded in count and
// time. Run it from the repository:
//
//	go build -o /tmp/ts ./cmd/token-sidecar
//	go run ./bench/connflood -binary /tmp/ts -scenario all
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "connflood:", err)
		os.Exit(1)
	}
}

type options struct {
	binary      string
	scenario    string
	bodies      int
	adminConns  int
	tokenConns  int
	probes      int
	newClients  int
	silent      bool
	waitLimit   time.Duration
	sidecarArgs string
}

func run(args []string) error {
	var o options
	fs := flag.NewFlagSet("connflood", flag.ContinueOnError)
	fs.StringVar(&o.binary, "binary", "", "token-sidecar binary to measure (required)")
	fs.StringVar(&o.scenario, "scenario", "all", "proxy-bodies, admin-idle, token-idle or all")
	fs.IntVar(&o.bodies, "bodies", 300, "proxy-bodies: requests announcing 1 MiB and sending 1 byte")
	fs.IntVar(&o.adminConns, "admin-conns", 3000, "admin-idle: idle keep-alive connections held")
	fs.IntVar(&o.tokenConns, "token-conns", 1100, "token-idle: idle keep-alive connections held")
	fs.IntVar(&o.probes, "probes", 30, "admin-idle: probes sent on new connections during the flood")
	fs.IntVar(&o.newClients, "new-clients", 10, "token-idle: new clients asking for a token, one after the other")
	fs.BoolVar(&o.silent, "silent", false, "token-idle: the held connections never send a request (instead of one /token each)")
	fs.DurationVar(&o.waitLimit, "wait-limit", 120*time.Second, "longest one probe or new client may wait")
	fs.StringVar(&o.sidecarArgs, "sidecar-args", "", "extra flags for the sidecar, space-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.binary == "" {
		return errors.New("-binary is required")
	}
	scenarios := map[string]func(options) error{
		"proxy-bodies": proxyBodies, "admin-idle": adminIdle, "token-idle": tokenIdle,
	}
	names := []string{"proxy-bodies", "admin-idle", "token-idle"}
	if o.scenario != "all" {
		if scenarios[o.scenario] == nil {
			return fmt.Errorf("unknown scenario %q", o.scenario)
		}
		names = []string{o.scenario}
	}
	for _, n := range names {
		fmt.Printf("== %s (%s %s)\n", n, o.binary, o.sidecarArgs)
		if err := scenarios[n](o); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return nil
}

// sidecar is a running binary.
type sidecar struct {
	cmd                 *exec.Cmd
	tokenAddr, adminAdr string
}

func start(o options) (*sidecar, error) {
	args := []string{"-demo", "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0"}
	args = append(args, strings.Fields(o.sidecarArgs)...)
	cmd := exec.Command(o.binary, args...)
	cmd.Stdout = io.Discard
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &sidecar{cmd: cmd}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			var rec struct{ Msg, TokenAddr, AdminAddr string }
			var raw map[string]any
			if json.Unmarshal(sc.Bytes(), &raw) == nil && raw["msg"] == "token-sidecar started" {
				rec.TokenAddr, _ = raw["token_addr"].(string)
				rec.AdminAddr, _ = raw["admin_addr"].(string)
				once.Do(func() { s.tokenAddr, s.adminAdr = rec.TokenAddr, rec.AdminAddr; close(started) })
			}
		}
	}()
	select {
	case <-started:
		return s, nil
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		return nil, errors.New("the sidecar did not start")
	}
}

func (s *sidecar) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// rssMiB is the sidecar's resident set, from /proc.
func (s *sidecar) rssMiB() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}

// goroutines is go_goroutines from the sidecar's /metrics, read on a new
// connection ("?" if it cannot be read).
func (s *sidecar) goroutines() string {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + s.adminAdr + "/metrics")
	if err != nil {
		return "?"
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			return v
		}
	}
	return "?"
}

func (s *sidecar) threads() string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Threads:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "Threads:"))
		}
	}
	return "?"
}

// fresh sends one request on a new connection and returns its status and
// latency (status -1: no answer within limit).
func fresh(url string, limit time.Duration) (int, time.Duration) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: limit}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Token-Request", "true")
	req.Header.Set("X-Tenant-ID", "demo-tenant")
	t0 := time.Now()
	resp, err := c.Do(req)
	d := time.Since(t0)
	if err != nil {
		return -1, d
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, d
}

// keptGet opens a connection, sends one keep-alive GET and leaves the
// connection open; nil if it was not answered within limit.
func keptGet(addr, path string, limit time.Duration) net.Conn {
	c, err := net.DialTimeout("tcp", addr, limit)
	if err != nil {
		return nil
	}
	c.SetDeadline(time.Now().Add(limit))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: sidecar\r\nX-Token-Request: true\r\n\r\n", path)
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return c // held anyway: it waits in the backlog or was accepted late
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return c
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("n=%d min=%v p50=%v max=%v", len(s), s[0].Round(10*time.Microsecond),
		s[len(s)/2].Round(10*time.Microsecond), s[len(s)-1].Round(10*time.Microsecond))
}

func proxyBodies(o options) error {
	s, err := start(o)
	if err != nil {
		return err
	}
	defer s.stop()
	if code, _ := fresh("http://"+s.tokenAddr+"/proxy/api/v2/users/me", 10*time.Second); code != 200 {
		return fmt.Errorf("warm-up /proxy/: status %d", code)
	}
	time.Sleep(time.Second)
	idle := s.rssMiB()
	fmt.Printf("idle RSS: %.1f MiB, threads %s\n", idle, s.threads())
	var conns []net.Conn
	defer func() { closeAll(conns) }()
	for range o.bodies {
		c, err := net.Dial("tcp", s.tokenAddr)
		if err != nil {
			return err
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /proxy/api/v2/uploads HTTP/1.1\r\nHost: sidecar\r\nX-Token-Request: true\r\n"+
			"X-Tenant-ID: demo-tenant\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\nx", 1<<20)
	}
	peak := 0.0
	for i := range 12 {
		time.Sleep(250 * time.Millisecond)
		r := s.rssMiB()
		peak = max(peak, r)
		if i%4 == 3 {
			fmt.Printf("  %.2fs after the last request: RSS %.1f MiB\n", float64(i+1)/4, r)
		}
	}
	code, d := fresh("http://"+s.tokenAddr+"/token?tenant=demo-tenant", o.waitLimit)
	fmt.Printf("%d half-sent 1 MiB bodies: peak RSS %.1f MiB (+%.1f over idle), threads %s; a /token meanwhile: %d in %v\n",
		o.bodies, peak, peak-idle, s.threads(), code, d.Round(10*time.Microsecond))
	return nil
}

func adminIdle(o options) error {
	s, err := start(o)
	if err != nil {
		return err
	}
	defer s.stop()
	time.Sleep(time.Second)
	idle := s.rssMiB()
	fmt.Printf("idle RSS: %.1f MiB, threads %s, goroutines %s\n", idle, s.threads(), s.goroutines())
	conns := make([]net.Conn, o.adminConns)
	defer func() { closeAll(conns) }()
	t0 := time.Now()
	for i := range conns {
		conns[i] = keptGet(s.adminAdr, "/healthz", 2*time.Second)
	}
	fmt.Printf("opened %d keep-alive connections (one /healthz each) in %v; RSS %.1f MiB\n",
		len(conns), time.Since(t0).Round(time.Millisecond), s.rssMiB())

	// The flood goes on while the probes run: a flooder re-opens, one after
	// the other, connections in place of those the sidecar closed, until
	// the probes are done (at most 20 × adminConns).
	stop := make(chan struct{})
	var reopened int
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1)
		for i := 0; reopened < 20*o.adminConns; i = (i + 1) % len(conns) {
			select {
			case <-stop:
				return
			default:
			}
			c := conns[i]
			if c != nil {
				c.SetReadDeadline(time.Now().Add(time.Millisecond))
				if _, err := c.Read(buf); err != nil && isTimeout(err) {
					continue // still open
				}
				c.Close()
			}
			conns[i] = keptGet(s.adminAdr, "/healthz", 2*time.Second)
			reopened++
		}
	})
	var lat []time.Duration
	failed := 0
	peak := 0.0
	for i := range o.probes {
		path := []string{"/healthz", "/readyz", "/metrics"}[i%3]
		code, d := fresh("http://"+s.adminAdr+path, o.waitLimit)
		if code != 200 {
			failed++
		}
		lat = append(lat, d)
		peak = max(peak, s.rssMiB())
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	fmt.Printf("%d probes during the flood (%d connections re-opened): %d failed; latency %s\n",
		o.probes, reopened, failed, summary(lat))
	fmt.Printf("RSS with %d idle admin connections: peak %.1f MiB (+%.1f over idle), now %.1f MiB, threads %s, goroutines %s\n",
		o.adminConns, peak, peak-idle, s.rssMiB(), s.threads(), s.goroutines())
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func tokenIdle(o options) error {
	s, err := start(o)
	if err != nil {
		return err
	}
	defer s.stop()
	if code, _ := fresh("http://"+s.tokenAddr+"/token?tenant=demo-tenant", 10*time.Second); code != 200 {
		return fmt.Errorf("warm-up /token: status %d", code)
	}
	idle := s.rssMiB()
	conns := make([]net.Conn, o.tokenConns)
	defer func() { closeAll(conns) }()
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			if o.silent {
				conns[i], _ = net.DialTimeout("tcp", s.tokenAddr, 2*time.Second)
				return
			}
			conns[i] = keptGet(s.tokenAddr, "/token?tenant=demo-tenant", 2*time.Second)
		})
		if i%64 == 63 {
			wg.Wait()
		}
	}
	wg.Wait()
	what := "keep-alive connections (one /token each)"
	if o.silent {
		what = "silent connections (no request)"
	}
	fmt.Printf("opened %d %s in %v; RSS %.1f MiB (idle %.1f)\n",
		len(conns), what, time.Since(t0).Round(time.Millisecond), s.rssMiB(), idle)
	fmt.Printf("goroutines with them open: %s\n", s.goroutines())
	var lat []time.Duration
	failed := 0
	for range o.newClients {
		code, d := fresh("http://"+s.tokenAddr+"/token?tenant=demo-tenant", o.waitLimit)
		if code != 200 {
			failed++
		}
		lat = append(lat, d)
	}
	fmt.Printf("%d new clients asking for /token with %d idle connections open: %d failed; latency %s\n",
		o.newClients, o.tokenConns, failed, summary(lat))
	return nil
}
