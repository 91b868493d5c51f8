// Package redistest starts a real redis-server for tests, on a free loopback
// port, with nothing persisted, and stops it when the test ends.
//
// Without redis-server on PATH the test is skipped, unless CI is set: a CI
// run must not pass by skipping the tests that matter (.ci/run installs
// Debian's redis-server).
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process. Its methods are safe for concurrent
// use.
type Server struct {
	tb   testing.TB
	port int
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts a redis-server with the extra arguments (e.g.
// "--requirepass", "p") and registers its stop with tb.Cleanup.
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("redis-server is not installed, and CI is set: install it (apt-get install -y redis-server)")
		}
		tb.Skip("redis-server is not installed (apt-get install -y redis-server); skipping the tests against a real Redis")
	}
	s := &Server{tb: tb, args: extra}
	var err error
	for range 5 { // a free port may be taken between the probe and the start
		if s.port, err = freePort(); err != nil {
			continue
		}
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("starting redis-server: %v", err)
	}
	tb.Cleanup(s.Kill)
	return s
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) start() error {
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"}, s.args...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited at start (port %d taken?)", s.port)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return fmt.Errorf("redis-server did not listen on %s within 10s", s.Addr())
		}
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is a redis:// URL of the server, without a password.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Kill stops the server at once (SIGKILL), as a crash would. Its data are
// lost. Killing a stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	// Wait until the port is closed, so that a restart can bind it.
	for range 200 {
		c, err := net.DialTimeout("tcp", s.Addr(), 50*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
}

// Restart starts a killed server again on the same port, empty.
func (s *Server) Restart() {
	s.tb.Helper()
	var err error
	for range 50 { // the port may linger briefly
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.tb.Fatalf("restarting redis-server: %v", err)
}

// Client is a client of the server for inspecting it; the test closes it.
func (s *Server) Client(opts ...func(*redis.Options)) *redis.Client {
	o := &redis.Options{Addr: s.Addr(), DisableIdentity: true}
	for _, f := range opts {
		f(o)
	}
	c := redis.NewClient(o)
	s.tb.Cleanup(func() { c.Close() })
	return c
}

// Dump returns every key of the server with its value, one "key=value"
// string per key, for scans that must find no secret. Strings are read as
// they are (DUMP would compress them); other types are rendered by DUMP.
func (s *Server) Dump(ctx context.Context, c *redis.Client) []string {
	s.tb.Helper()
	var out []string
	iter := c.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		v, err := c.Get(ctx, k).Result()
		if err != nil && err != redis.Nil {
			if v, err = c.Dump(ctx, k).Result(); err != nil && err != redis.Nil {
				s.tb.Fatalf("DUMP: %v", err)
			}
		}
		out = append(out, k+"="+v)
	}
	if err := iter.Err(); err != nil {
		s.tb.Fatalf("SCAN: %v", err)
	}
	return out
}
