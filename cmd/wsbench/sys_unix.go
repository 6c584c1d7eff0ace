//go:build unix

package main

import (
	"fmt"
	"syscall"
	"time"
)

// ensureFiles makes sure the process may open n sockets (plus some slack),
// raising the soft RLIMIT_NOFILE up to the hard limit if needed. Go already
// raises the soft limit to the hard one at start-up on Linux; this catches a
// hard limit too low for the run before any socket is opened.
func ensureFiles(n int) error {
	need := uint64(n) + 64
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("rlimit: %w", err)
	}
	if rl.Cur >= need {
		return nil
	}
	if rl.Max < need {
		return fmt.Errorf("rlimit: %d sockets need %d file descriptors, the hard RLIMIT_NOFILE is %d (raise it: ulimit -Hn)", n, need, rl.Max)
	}
	rl.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return fmt.Errorf("rlimit: raise to %d: %w", need, err)
	}
	return nil
}

// selfUsage returns the CPU time (user + system) wsbench has used so far and
// its peak resident memory in bytes.
func selfUsage() (cpu time.Duration, maxRSS int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	// Linux reports ru_maxrss in KiB (macOS in bytes; wsbench targets Linux).
	return cpu, int64(ru.Maxrss) * 1024
}
