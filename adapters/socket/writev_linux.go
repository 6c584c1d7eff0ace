package socket

import (
	"syscall"
	"unsafe"
)

const canWritev = true

// maxIovec is the most buffers one writev takes (IOV_MAX).
const maxIovec = 1024

// writev writes bufs (at most maxIovec of them; empty ones are skipped) to
// fd in one system call, building the vector in *iov.
func writev(fd uintptr, bufs [][]byte, iov *[]syscall.Iovec) (int, error) {
	v := (*iov)[:0]
	for _, b := range bufs {
		if len(v) == maxIovec {
			break
		}
		if len(b) == 0 {
			continue
		}
		e := syscall.Iovec{Base: &b[0]}
		e.SetLen(len(b))
		v = append(v, e)
	}
	*iov = v
	if len(v) == 0 {
		return 0, nil
	}
	defer clear(v) // keep no frame alive from the flusher's vector
	for {
		n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)))
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			continue
		default:
			return 0, errno
		}
	}
}
