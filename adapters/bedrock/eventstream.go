package bedrock

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"math"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/schemas"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/aws/smithy-go/transport/http/protocol/restjson1"
)

// eventProtocol is the SDK's restJson1 protocol with a lean reader of
// ConverseStream's text deltas, most of a streamed answer's events.
//
// smithy-go v1.28.9 decodes each event with many small reads, a CRC
// through a TeeReader, a heap-allocated header name and a fresh payload
// buffer, then its schema-driven JSON decoder: about 3.5 KB a token. Its
// restJson1 protocol also keeps one decoder per client, written by every
// stream: a data race when two streams of one client are read at once.
//
// DeserializeEventMessage reads a whole message in two reads into a
// pooled buffer and, when it is a text delta of exactly the shape
// Bedrock sends, builds the event itself. Any other message, and any
// input it does not fully understand (a bad length or checksum, a
// truncated stream, an odd header, an escape or a key it does not know),
// goes to a fresh SDK protocol with the very bytes read so far in front
// of the rest of the stream, so the SDK returns what it always returned:
// the same events, typed exceptions and errors, io.EOF at the end.
type eventProtocol struct {
	*restjson1.Protocol
}

var _ smithyhttp.ClientProtocol = eventProtocol{}

// newEventProtocol wraps the client's protocol when it is the SDK's
// restJson1 one; any other is returned as it is, since the fallback
// speaks only restJson1.
func newEventProtocol(p smithyhttp.ClientProtocol) smithyhttp.ClientProtocol {
	rj, ok := p.(*restjson1.Protocol)
	if !ok {
		return p
	}
	return eventProtocol{rj}
}

const (
	preludeLen = 12             // total length, headers length, prelude CRC
	minFrame   = preludeLen + 4 // and the message CRC
	// maxLeanFrame bounds the messages read into a pooled buffer; a text
	// delta is far smaller. Larger ones are the SDK's to read.
	maxLeanFrame = 64 << 10
)

// framePool holds the buffers messages are read into: the protocol is
// shared by all the client's streams, so it keeps no buffer of its own.
var framePool = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

// DeserializeEventMessage reads one event-stream message from r.
func (p eventProtocol) DeserializeEventMessage(schema *smithy.Schema, reg *smithy.TypeRegistry, r io.Reader) (smithy.Deserializable, error) {
	bp := framePool.Get().(*[]byte)
	defer framePool.Put(bp)

	buf := (*bp)[:preludeLen]
	n, err := io.ReadFull(r, buf)
	if err != nil {
		if n == 0 && err == io.EOF { //nolint:errorlint // ReadFull returns io.EOF itself
			return nil, io.EOF
		}
		return sdkEvent(schema, reg, buf[:n], failedReader{err})
	}
	total := binary.BigEndian.Uint32(buf[0:4])
	headersLen := binary.BigEndian.Uint32(buf[4:8])
	if total < minFrame || total > maxLeanFrame || headersLen > total-minFrame ||
		crc32.ChecksumIEEE(buf[0:8]) != binary.BigEndian.Uint32(buf[8:12]) {
		return sdkEvent(schema, reg, buf, r)
	}

	if cap(*bp) < int(total) {
		nb := make([]byte, total)
		copy(nb, buf)
		*bp = nb[:0]
	}
	buf = (*bp)[:total]
	n, err = io.ReadFull(r, buf[preludeLen:])
	if err != nil {
		return sdkEvent(schema, reg, buf[:preludeLen+n], failedReader{err})
	}
	if ev, ok := textDeltaEvent(schema, buf); ok {
		return ev, nil
	}
	return sdkEvent(schema, reg, buf, nil)
}

// sdkEvent has a fresh SDK protocol read the message from the bytes read
// so far, then from rest. A fresh one, because the client's own shares
// its decoder's state between streams.
func sdkEvent(schema *smithy.Schema, reg *smithy.TypeRegistry, read []byte, rest io.Reader) (smithy.Deserializable, error) {
	var r io.Reader = bytes.NewReader(read)
	if rest != nil {
		r = io.MultiReader(r, rest)
	}
	return restjson1.New(nil).DeserializeEventMessage(schema, reg, r)
}

// failedReader repeats the error that ended a read, so that the SDK meets
// it where the stream did.
type failedReader struct{ err error }

func (f failedReader) Read([]byte) (int, error) {
	if f.err == io.ErrUnexpectedEOF { //nolint:errorlint // io.ReadFull's own value
		// io.ReadFull's short read: the stream ended with io.EOF. (The SDK
		// takes either for io.EOF.)
		return 0, io.EOF
	}
	return 0, f.err
}

// textDeltaEvent builds the event of a whole message that is a
// ConverseStream text delta of Bedrock's shape, exactly as the SDK does.
func textDeltaEvent(schema *smithy.Schema, frame []byte) (smithy.Deserializable, bool) {
	if schema != schemas.ConverseStreamOutput {
		return nil, false
	}
	end := len(frame) - 4
	if crc32.ChecksumIEEE(frame[:end]) != binary.BigEndian.Uint32(frame[end:]) {
		return nil, false
	}
	headersEnd := preludeLen + int(binary.BigEndian.Uint32(frame[4:8]))
	msgType, eventType, ok := typeHeaders(frame[preludeLen:headersEnd])
	if !ok || string(msgType) != "event" || string(eventType) != "contentBlockDelta" {
		return nil, false
	}
	index, text, ok := parseTextDelta(frame[headersEnd:end])
	if !ok {
		return nil, false
	}
	return &types.ContentBlockDeltaEvent{
		ContentBlockIndex: &index,
		Delta:             &types.ContentBlockDeltaMemberText{Value: text},
	}, true
}

// headerString is the event-stream header value type of strings.
const headerString = 7

// headerValueSize is the size of a header value by its type; -1 is a
// 2-byte length, then that many bytes.
var headerValueSize = [10]int{
	0, 0, // true, false
	1, 2, 4, 8, // int8, int16, int32, int64
	-1, -1, // bytes, string
	8,  // timestamp
	16, // uuid
}

// typeHeaders walks a message's headers for :message-type and
// :event-type, both strings. It fails on a malformed header, and on
// either name given twice (the SDK keeps the last value; no need to).
func typeHeaders(h []byte) (msgType, eventType []byte, ok bool) {
	var haveMsg, haveEvent bool
	for len(h) > 0 {
		nameEnd := 1 + int(h[0])
		if len(h) <= nameEnd {
			return nil, nil, false
		}
		name, typ := h[1:nameEnd], h[nameEnd]
		h = h[nameEnd+1:]
		if int(typ) >= len(headerValueSize) {
			return nil, nil, false
		}
		size := headerValueSize[typ]
		if size < 0 {
			if len(h) < 2 {
				return nil, nil, false
			}
			size = 2 + int(binary.BigEndian.Uint16(h))
		}
		if len(h) < size {
			return nil, nil, false
		}
		value := h[:size]
		h = h[size:]
		switch string(name) {
		case ":message-type":
			if haveMsg || typ != headerString {
				return nil, nil, false
			}
			haveMsg, msgType = true, value[2:]
		case ":event-type":
			if haveEvent || typ != headerString {
				return nil, nil, false
			}
			haveEvent, eventType = true, value[2:]
		}
	}
	return msgType, eventType, haveMsg && haveEvent
}

// parseTextDelta parses {"contentBlockIndex":N,"delta":{"text":"..."}}
// with an optional "p" (Bedrock's padding), keys in any order, JSON
// whitespace between tokens. It fails on anything else: an unknown or
// repeated key, another delta member, null, a number that is not a plain
// int32, invalid UTF-8, an escape it does not decode exactly as the SDK
// does, trailing bytes.
func parseTextDelta(b []byte) (index int32, text string, ok bool) {
	s := scanner{b: b}
	if !s.next('{') {
		return 0, "", false
	}
	var haveIndex, haveDelta, havePad bool
	for {
		key, ok := s.key()
		if !ok {
			return 0, "", false
		}
		switch string(key) {
		case "contentBlockIndex":
			if haveIndex {
				return 0, "", false
			}
			haveIndex = true
			if index, ok = s.int32(); !ok {
				return 0, "", false
			}
		case "delta":
			if haveDelta || !s.next('{') {
				return 0, "", false
			}
			haveDelta = true
			if k, ok := s.key(); !ok || string(k) != "text" {
				return 0, "", false
			}
			if text, ok = s.str(); !ok || !s.next('}') {
				return 0, "", false
			}
		case "p":
			if havePad || !s.pad() {
				return 0, "", false
			}
			havePad = true
		default:
			return 0, "", false
		}
		if s.next('}') {
			break
		}
		if !s.next(',') {
			return 0, "", false
		}
	}
	s.space()
	return index, text, haveIndex && haveDelta && s.i == len(s.b)
}

// scanner reads the few JSON tokens of a text delta.
type scanner struct {
	b []byte
	i int
}

// space skips JSON's whitespace, as the SDK's parser does.
func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next consumes c after whitespace.
func (s *scanner) next(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// key reads an object key of plain printable ASCII and its colon.
func (s *scanner) key() ([]byte, bool) {
	if !s.next('"') {
		return nil, false
	}
	start := s.i
	for ; s.i < len(s.b); s.i++ {
		c := s.b[s.i]
		if c == '"' {
			key := s.b[start:s.i]
			s.i++
			return key, s.next(':')
		}
		if c < 0x20 || c > 0x7e || c == '\\' {
			return nil, false
		}
	}
	return nil, false
}

// int32 reads a non-negative integer in int32's range: digits only, with
// no leading zero, no fraction and no exponent.
func (s *scanner) int32() (int32, bool) {
	s.space()
	start := s.i
	var n int64
	for ; s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9'; s.i++ {
		if s.i-start >= 10 {
			return 0, false
		}
		n = n*10 + int64(s.b[s.i]-'0')
	}
	digits := s.i - start
	if digits == 0 || digits > 1 && s.b[start] == '0' || n > math.MaxInt32 {
		return 0, false
	}
	// The SDK's parser would take "1.5" or "1e3" as one token, and fail.
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r', ',', '}':
		default:
			return 0, false
		}
	}
	return int32(n), true
}

// pad reads Bedrock's padding, a string of printable ASCII with no
// escape.
func (s *scanner) pad() bool {
	if !s.next('"') {
		return false
	}
	for ; s.i < len(s.b); s.i++ {
		c := s.b[s.i]
		if c == '"' {
			s.i++
			return true
		}
		if c < 0x20 || c > 0x7e || c == '\\' {
			return false
		}
	}
	return false
}

// str reads a string of valid UTF-8: one allocation, for the string.
func (s *scanner) str() (string, bool) {
	if !s.next('"') {
		return "", false
	}
	start := s.i
	escaped, ascii := false, true
	for ; s.i < len(s.b); s.i++ {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw := s.b[start:s.i]
			s.i++
			// Escapes are ASCII, so raw is valid UTF-8 when the text is.
			if !ascii && !utf8.Valid(raw) {
				return "", false
			}
			if !escaped {
				return string(raw), true
			}
			return unescape(raw)
		case c == '\\':
			escaped = true
			s.i++ // an escaped quote does not end the string
		case c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// unescape decodes the escapes of a JSON string's content. It fails on
// those the SDK would reject or replace: \' and other unknown ones,
// malformed \u, and a lone surrogate (U+FFFD for the SDK).
func unescape(raw []byte) (string, bool) {
	var sb strings.Builder
	sb.Grow(len(raw)) // the text is never longer than its escaped form
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			sb.WriteByte(c)
			continue
		}
		i++
		if i >= len(raw) {
			return "", false
		}
		switch raw[i] {
		case '"', '\\', '/':
			sb.WriteByte(raw[i])
		case 'b':
			sb.WriteByte('\b')
		case 'f':
			sb.WriteByte('\f')
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		case 'u':
			r, ok := hex4(raw[i+1:])
			if !ok {
				return "", false
			}
			i += 4
			if utf16.IsSurrogate(r) {
				if r >= 0xdc00 || i+2 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
					return "", false
				}
				lo, ok := hex4(raw[i+3:])
				if !ok || lo < 0xdc00 || lo > 0xdfff {
					return "", false
				}
				i += 6
				r = utf16.DecodeRune(r, lo)
			}
			sb.WriteRune(r)
		default:
			return "", false
		}
	}
	return sb.String(), true
}

// hex4 reads the 4 hex digits of a \u escape.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
