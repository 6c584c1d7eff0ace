package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// serverRSS is one server's resident memory during a run, in bytes, from
// /proc/PID/status VmRSS. Zero means not measured.
type serverRSS struct {
	PID       int    `json:"pid"`
	URL       string `json:"url"`
	Sockets   int    `json:"sockets"`
	Before    int64  `json:"rss_before_bytes"`
	Connected int64  `json:"rss_connected_bytes"`
	// Settled holds the samples taken after the settle time (idle only);
	// per-socket figures use the last one.
	Settled   []int64 `json:"rss_settled_bytes,omitempty"`
	End       int64   `json:"rss_end_bytes"`
	PerSocket float64 `json:"rss_per_socket_bytes"`
	Error     string  `json:"error,omitempty"`
}

// sample reads the current VmRSS into *dst, recording the first error.
func (r *serverRSS) sample(dst *int64) {
	v, err := readRSS(r.PID)
	if err != nil {
		if r.Error == "" {
			r.Error = err.Error()
		}
		return
	}
	*dst = v
}

// perSocket sets PerSocket from Before and after.
func (r *serverRSS) perSocket(after int64) {
	if r.Sockets > 0 && r.Before > 0 && after > 0 {
		r.PerSocket = float64(after-r.Before) / float64(r.Sockets)
	}
}

// readRSS returns the VmRSS of process pid in bytes.
func readRSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read rss: %w", err)
	}
	defer func() { _ = f.Close() }() // read only: a failed close loses nothing
	return parseVmRSS(f)
}

// parseVmRSS finds the VmRSS line of a /proc/PID/status file ("VmRSS:
// 12345 kB") and returns it in bytes.
func parseVmRSS(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("read rss: unexpected line %q", line)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read rss: %w", err)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read rss: %w", err)
	}
	return 0, errors.New("read rss: no VmRSS line (kernel thread or exited process?)")
}

// clockTicks is the unit of /proc/PID/stat's CPU times: USER_HZ, 100 on
// every Linux architecture wsbench runs on.
const clockTicks = 100

// readCPU returns the CPU time (user + system) process pid has used so far,
// from /proc/PID/stat.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read cpu: %w", err)
	}
	return parseStatCPU(string(b), clockTicks)
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a /proc/PID/stat
// line, counted in ticks a second. The command (field 2) is in parentheses
// and may hold spaces and parentheses itself, so fields are counted from
// its last ')'.
func parseStatCPU(stat string, ticks int64) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("read cpu: no command in stat")
	}
	fields := strings.Fields(stat[i+1:])
	// fields[0] is field 3 (state): utime is fields[11], stime fields[12].
	if len(fields) < 13 {
		return 0, errors.New("read cpu: stat too short")
	}
	var sum int64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read cpu: %w", err)
		}
		sum += v
	}
	return time.Duration(sum) * time.Second / time.Duration(ticks), nil
}

// serversCPU returns each server's CPU time so far, -1 where it cannot be
// read.
func serversCPU(servers []serverRSS) []time.Duration {
	out := make([]time.Duration, len(servers))
	for i, s := range servers {
		v, err := readCPU(s.PID)
		if err != nil {
			v = -1
		}
		out[i] = v
	}
	return out
}
