//go:build race

package web_test

// raceEnabled: the race detector's instrumentation grows every stack frame.
const raceEnabled = true
