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
		n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v[0])), uintptr(len(v))) //nolint:gosec // audited: v is live and pinned for the call (writev reads len(v) iovecs)
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

// peek reports whether the socket fd has a byte to read, an end or an
// error, without taking it: RawConn.Read waits while it reports false.
func peek(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, //nolint:gosec // audited: a 1-byte buffer on the stack for the call
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno != syscall.EAGAIN
}
