package socket

import (
	"encoding/binary"

	"github.com/gorilla/websocket"
)

// Server frames are not masked, so a frame is a header and the payload
// as it is: built once, it can be written to any number of sockets.

const (
	finText  = 0x80 | websocket.TextMessage
	finClose = 0x80 | websocket.CloseMessage
	finPing  = 0x80 | websocket.PingMessage
	finPong  = 0x80 | websocket.PongMessage
)

// Frame returns payload as one final text frame.
func Frame(payload []byte) []byte {
	return appendFrame(make([]byte, 0, 10+len(payload)), finText, payload)
}

func appendFrame(b []byte, op byte, payload []byte) []byte {
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, op, byte(n))
	case n <= 0xffff:
		b = append(b, op, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, op, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// closeFrame builds a close frame; the reason is cut to fit the 125 bytes
// a control frame may carry.
func closeFrame(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code)) //nolint:gosec // close codes are this server's own protocol constants (1000-4999)
	p = append(p, reason...)
	return appendFrame(make([]byte, 0, 2+len(p)), finClose, p)
}

var pingFrame = []byte{finPing, 0}
