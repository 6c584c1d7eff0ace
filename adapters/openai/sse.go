package openai

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Bounds of what a stream may send. A chunk carries one token or a few:
// a line of MaxLineBytes is far beyond any real one, and a whole answer
// of MaxStreamBytes is hundreds of thousands of tokens of chunks.
const (
	MaxLineBytes   = 1 << 20
	MaxStreamBytes = 64 << 20
	// maxBodyBytes bounds a completion's body and an error's.
	maxBodyBytes = 4 << 20
)

// errTooLarge ends a body that passes its bound.
var errTooLarge = errors.New("the answer is larger than the adapter accepts")

// capped reads at most n bytes of r and fails, rather than ending, past
// them: a cut-short body must not pass for a whole one.
type capped struct {
	r io.Reader
	n int64
}

func (c *capped) Read(p []byte) (int, error) {
	if c.n <= 0 {
		// One more byte tells a body of exactly n bytes from a longer one.
		var one [1]byte
		k, err := c.r.Read(one[:])
		if k > 0 {
			return 0, fmt.Errorf("%w (%d bytes)", errTooLarge, c.n)
		}
		return 0, err
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	k, err := c.r.Read(p)
	c.n -= int64(k)
	return k, err
}

// events reads server-sent events (the WHATWG EventSource format) and
// returns each event's data: the data lines of one event joined with \n,
// given when a blank line ends the event. Comment lines (starting with
// ':') and the other fields (event, id, retry) are skipped; lines end with
// \n, \r\n or \r. An event that the body's end cuts short is given too,
// as servers may omit the last blank line.
type events struct {
	r    *bufio.Reader
	data bytes.Buffer
	has  bool // data holds at least one data line
	line []byte
	// cr is set when the last line ended with \r: a \n right after it
	// belongs to the same line end.
	cr bool
}

func newEvents(r io.Reader) *events {
	return &events{r: bufio.NewReaderSize(r, 16<<10)}
}

// next returns the next event's data; io.EOF at the body's end.
func (e *events) next() ([]byte, error) {
	for {
		line, err := e.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && e.has {
				return e.take(), nil
			}
			return nil, err
		}
		if len(line) == 0 {
			if e.has {
				return e.take(), nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		if string(field) != "data" {
			continue
		}
		if e.has {
			e.data.WriteByte('\n')
		}
		e.data.Write(value)
		e.has = true
		if e.data.Len() > MaxLineBytes {
			return nil, fmt.Errorf("%w: an event longer than %d bytes", errTooLarge, MaxLineBytes)
		}
	}
}

func (e *events) take() []byte {
	out := bytes.Clone(e.data.Bytes())
	e.data.Reset()
	e.has = false
	return out
}

// readLine returns the next line without its end, bounded by
// MaxLineBytes. At the body's end it returns the last unfinished line, if
// any, then io.EOF.
func (e *events) readLine() ([]byte, error) {
	e.line = e.line[:0]
	for {
		b, err := e.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(e.line) > 0 {
				return e.line, nil
			}
			return nil, err
		}
		if e.cr {
			e.cr = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return e.line, nil
		case '\r':
			e.cr = true
			return e.line, nil
		}
		if len(e.line) >= MaxLineBytes {
			return nil, fmt.Errorf("%w: a line longer than %d bytes", errTooLarge, MaxLineBytes)
		}
		e.line = append(e.line, b)
	}
}
