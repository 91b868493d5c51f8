package main

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pacer sleeps with a timerfd that the Go runtime's network poller waits
// on. Both obvious alternatives are late at the scale of a cached hit:
// time.Sleep, because an idle Go process waits for timers in epoll with a
// millisecond timeout, so a 200 µs sleep can last a whole millisecond; and
// nanosleep, because the goroutine keeps its P through the syscall until
// sysmon takes it back, so with GOMAXPROCS=1 no worker runs meanwhile. A
// timerfd wakes the poller when the kernel's high-resolution timer fires,
// and the goroutine waits parked, leaving the P to the workers.
type pacer struct {
	f *os.File
}

func newPacer() (*pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("timerfd_create", err)
	}
	// A non-blocking descriptor is registered with the poller, so Read
	// parks the goroutine instead of blocking a thread.
	return &pacer{f: os.NewFile(uintptr(fd), "pacer-timerfd")}, nil
}

// sleep returns after d.
func (p *pacer) sleep(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	rc, err := p.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.TimerfdSettime(int(fd), 0, &spec, nil) }); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("timerfd_settime", serr)
	}
	var expirations [8]byte
	_, err = p.f.Read(expirations[:])
	return err
}

func (p *pacer) close() error { return p.f.Close() }
