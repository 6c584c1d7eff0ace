package memory_test

import (
	"testing"

	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
)

func TestThreadStoreContract(t *testing.T) {
	porttest.ThreadStore(t, func(t *testing.T) (ports.ThreadStore, ports.ThreadStore) {
		return memory.NewThreads(), nil
	})
}

func TestThreadLockContract(t *testing.T) {
	porttest.ThreadLock(t, func(t *testing.T) (ports.ThreadLock, ports.ThreadLock) {
		return memory.NewLock(), nil
	})
}
