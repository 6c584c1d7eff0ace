package main

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
)

// Messages wsbench sends. The session id travels in the URL, so these are
// the same for every socket.
const (
	helloMsg    = `{"type":"hello","user_type":"bench","client_type":"wsbench"}`
	presenceMsg = `{"type":"presence"}`
)

// appendBroadcast appends the broadcast frame of publisher p's seq-th message
// sent at t (unix nanoseconds) to dst:
// {"type":"broadcast","msg":"b","data":{"t":T,"p":P,"s":S}}.
func appendBroadcast(dst []byte, t int64, p int, seq int64) []byte {
	dst = append(dst, `{"type":"broadcast","msg":"b","data":{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"p":`...)
	dst = strconv.AppendInt(dst, int64(p), 10)
	dst = append(dst, `,"s":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	return append(dst, `}}`...)
}

// msgKind is the type of a server message, as far as wsbench cares.
type msgKind uint8

const (
	kindOther msgKind = iota
	kindHelloOK
	kindSessionMessage
	kindPresence
	kindError
	kindPong
)

// Bits of message.has.
const (
	hasT = 1 << iota
	hasP
	hasS
	hasCount
	hasConnections
)

// message holds the few fields wsbench reads from a server message.
// parseMessage fills it without allocating: code and text alias the input
// and keep JSON escapes undecoded (see jsonString).
type message struct {
	kind msgKind
	has  uint8
	// data of a session_message sent by wsbench: send time (unix ns),
	// publisher id and sequence number.
	t, p, s int64
	// presence reply: the count field and the length of connections.
	count       int64
	connections int
	// error reply: the code (wsserver) and message (both servers).
	code, text []byte
}

// benchData reports whether m carries the t, p and s fields of a wsbench
// broadcast.
func (m *message) benchData() bool { return m.has&(hasT|hasP|hasS) == hasT|hasP|hasS }

// parseMessage reads a server message. It scans the JSON object once and
// decodes only type, data.{t,p,s}, count, len(connections), code and
// message; every other value is skipped. Keys may come in any order and with
// any whitespace (the Django reference server puts spaces after ':' and
// ','; Go servers may sort keys). Numbers wsbench reads must be integers.
func parseMessage(b []byte, m *message) error {
	*m = message{}
	s := scanner{b: b}
	return s.object(func(key []byte) bool {
		switch string(key) {
		case "type":
			return kindInto(&s, &m.kind, kindOf)
		case "data":
			if s.peek() == '{' {
				return s.benchData(m)
			}
			return s.skip()
		case "count":
			if s.peek() == '"' || !s.number(&m.count) {
				return false
			}
			m.has |= hasCount
		case "connections":
			if s.peek() != '[' {
				return s.skip()
			}
			n, ok := s.arrayLen()
			if !ok {
				return false
			}
			m.connections = n
			m.has |= hasConnections
		case "code":
			return s.strInto(&m.code)
		case "message":
			return s.strInto(&m.text)
		default:
			return s.skip()
		}
		return true
	})
}

func kindOf(v []byte) msgKind {
	switch string(v) {
	case "session_message":
		return kindSessionMessage
	case "hello_ok":
		return kindHelloOK
	case "presence":
		return kindPresence
	case "error":
		return kindError
	case "pong":
		return kindPong
	}
	return kindOther
}

// jsonString decodes the raw contents of a JSON string as returned by the
// scanner (escapes included). It allocates, so it is for rare messages only.
func jsonString(raw []byte) string {
	var s string
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	if err := json.Unmarshal(q, &s); err != nil {
		return string(raw)
	}
	return s
}

// scanner walks a JSON text without building values.
type scanner struct {
	b []byte
	i int
}

// object scans a JSON object, calling field with each key and the scanner
// at its value. field consumes the value (s.skip for a key it does not
// want) and reports false when the value is malformed, which fails the
// object naming the key.
func (s *scanner) object(field func(key []byte) bool) error {
	if !s.consume('{') {
		return errors.New("message is not a JSON object")
	}
	if s.consume('}') {
		return s.end()
	}
	for {
		key, ok := s.str()
		if !ok || !s.consume(':') {
			return s.fail("key")
		}
		if !field(key) {
			return s.fail(string(key))
		}
		if s.consume(',') {
			continue
		}
		if s.consume('}') {
			return s.end()
		}
		return s.fail("object")
	}
}

func (s *scanner) fail(what string) error {
	return errors.New("bad JSON at byte " + strconv.Itoa(s.i) + " (" + what + ")")
}

func (s *scanner) end() error {
	s.ws()
	if s.i != len(s.b) {
		return s.fail("trailing data")
	}
	return nil
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after whitespace, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) consume(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

// str reads a string and returns its raw contents (escapes not decoded).
func (s *scanner) str() ([]byte, bool) {
	if !s.consume('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			v := s.b[start:s.i]
			s.i++
			return v, true
		case '\\':
			s.i += 2
		default:
			s.i++
		}
	}
	return nil, false
}

// strOrSkip reads a string, or skips any other value and returns nil.
func (s *scanner) strOrSkip() ([]byte, bool) {
	if s.peek() == '"' {
		return s.str()
	}
	return nil, s.skip()
}

// kindInto reads a string value and stores in *dst the message kind kindOf
// makes of it.
func kindInto[K any](s *scanner, dst *K, kindOf func([]byte) K) bool {
	v, ok := s.str()
	if ok {
		*dst = kindOf(v)
	}
	return ok
}

// strInto is strOrSkip into *dst.
func (s *scanner) strInto(dst *[]byte) bool {
	v, ok := s.strOrSkip()
	*dst = v
	return ok
}

// number reads an integer into v. Fractions, exponents and values outside
// int64 fail: wsbench only ever sends integers.
func (s *scanner) number(v *int64) bool {
	s.ws()
	neg := false
	if s.i < len(s.b) && s.b[s.i] == '-' {
		neg = true
		s.i++
	}
	start := s.i
	var n uint64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		d := uint64(s.b[s.i] - '0')
		if n > (math.MaxUint64-d)/10 {
			return false
		}
		n = n*10 + d
		s.i++
	}
	if s.i == start {
		return false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return false
		}
	}
	switch {
	case !neg && n <= math.MaxInt64:
		*v = int64(n)
	case neg && n <= math.MaxInt64+1:
		*v = -int64(n-1) - 1
	default:
		return false
	}
	return true
}

// benchData reads a data object, keeping t, p and s.
func (s *scanner) benchData(m *message) bool {
	s.consume('{')
	if s.consume('}') {
		return true
	}
	for {
		key, ok := s.str()
		if !ok || !s.consume(':') {
			return false
		}
		var dst *int64
		var bit uint8
		if len(key) == 1 {
			switch key[0] {
			case 't':
				dst, bit = &m.t, hasT
			case 'p':
				dst, bit = &m.p, hasP
			case 's':
				dst, bit = &m.s, hasS
			}
		}
		if dst != nil && s.peek() != '"' && s.peek() != '{' && s.peek() != '[' {
			if !s.number(dst) {
				return false
			}
			m.has |= bit
		} else if !s.skip() {
			return false
		}
		if s.consume(',') {
			continue
		}
		return s.consume('}')
	}
}

// arrayLen skips an array and returns its number of elements.
func (s *scanner) arrayLen() (int, bool) {
	s.consume('[')
	if s.consume(']') {
		return 0, true
	}
	n := 0
	for {
		if !s.skip() {
			return 0, false
		}
		n++
		if s.consume(',') {
			continue
		}
		return n, s.consume(']')
	}
}

// skip skips one value of any kind.
func (s *scanner) skip() bool {
	switch c := s.peek(); c {
	case '"':
		_, ok := s.str()
		return ok
	case '{', '[':
		// Strings may hold brackets, so walk them; nesting depth is counted
		// without telling { from [ (the server sends valid JSON).
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, ok := s.str(); !ok {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	case 0:
		return false
	default:
		// A number, true, false or null: up to the next delimiter.
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.i > start
			}
			s.i++
		}
		return s.i > start
	}
}
