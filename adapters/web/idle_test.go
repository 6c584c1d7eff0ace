package web_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// TestIdleSessionSocketsParkOnSmallStacks holds joined session sockets,
// idle since their hello as a listener's is, and checks that their readers
// park on Go's smallest stack (2 KiB): an idle socket's cost is mostly its
// goroutine's stack, and reading through gorilla parks it deep enough to
// need twice that (docs/BENCHMARKS.md, idle memory). A reader that has
// served messages may keep the larger stack it grew: Go shrinks a parked
// stack only when a quarter of it would do.
func TestIdleSessionSocketsParkOnSmallStacks(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector grows every stack frame")
	}
	const sockets = 300
	f := newFixture(t, nil)
	stacks := func() uint64 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.StackInuse
	}
	before := stacks()
	for i := range sockets {
		f.join(t, fmt.Sprintf("idle-%d", i), "user")
	}
	var per uint64
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		// The last readers may still be on their way to the wait.
		if per = (stacks() - min(before, stacks())) / sockets; per <= 2560 {
			return
		}
	}
	t.Errorf("idle session sockets hold %d bytes of stack each, want at most 2.5 KiB (a 2 KiB stack each)", per)
}
