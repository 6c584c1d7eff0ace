//go:build !unix

package main

import "time"

// ensureFiles does nothing where there is no RLIMIT_NOFILE.
func ensureFiles(int) error { return nil }

// selfUsage is not measured here.
func selfUsage() (cpu time.Duration, maxRSS int64) { return 0, 0 }
