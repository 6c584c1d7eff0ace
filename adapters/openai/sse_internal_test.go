package openai

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readAll returns every event's data of body.
func readAll(body io.Reader) ([]string, error) {
	ev := newEvents(body)
	var out []string
	for {
		d, err := ev.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(d))
	}
}

func TestEvents(t *testing.T) {
	for name, tc := range map[string]struct {
		body string
		want []string
	}{
		"one per event":          {"data: a\n\ndata: b\n\n", []string{"a", "b"}},
		"CRLF":                   {"data: a\r\n\r\ndata: b\r\n\r\n", []string{"a", "b"}},
		"lone CR":                {"data: a\r\rdata: b\r\r", []string{"a", "b"}},
		"comments skipped":       {": keep-alive\n\ndata: a\n: ping\n\n:\n\n", []string{"a"}},
		"other fields skipped":   {"event: message\nid: 7\nretry: 1000\ndata: a\n\n", []string{"a"}},
		"no space after colon":   {"data:a\n\n", []string{"a"}},
		"only one space trimmed": {"data:  a \n\n", []string{" a "}},
		"lines of one event":     {"data: a\ndata: b\n\n", []string{"a\nb"}},
		"empty data":             {"data\n\ndata:\n\n", []string{"", ""}},
		"blank lines alone":      {"\n\n\r\n", nil},
		"no final blank line":    {"data: a\n\ndata: [DONE]", []string{"a", "[DONE]"}},
		"no final line end":      {"data: a", []string{"a"}},
		"unknown field no colon": {"hello\ndata: a\n\n", []string{"a"}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := readAll(strings.NewReader(tc.body))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestEventsBounded(t *testing.T) {
	long := "data: " + strings.Repeat("x", MaxLineBytes) + "\n\n"
	_, err := readAll(strings.NewReader(long))
	require.ErrorIs(t, err, errTooLarge)

	// Many lines of one event add up to the same bound.
	many := strings.Repeat("data: "+strings.Repeat("x", 1000)+"\n", MaxLineBytes/1000+1) + "\n"
	_, err = readAll(strings.NewReader(many))
	require.ErrorIs(t, err, errTooLarge)

	fits := "data: " + strings.Repeat("x", MaxLineBytes-6) + "\n\n"
	got, err := readAll(strings.NewReader(fits))
	require.NoError(t, err)
	require.Len(t, got, 1)
}

func TestCapped(t *testing.T) {
	b, err := io.ReadAll(&capped{r: strings.NewReader("12345"), n: 5})
	require.NoError(t, err)
	assert.Equal(t, "12345", string(b), "exactly the bound passes")
	_, err = io.ReadAll(&capped{r: strings.NewReader("123456"), n: 5})
	require.ErrorIs(t, err, errTooLarge)
}

// referenceEvents is the event stream format read the plain way: split
// into lines, then into events, as the WHATWG spec words it.
func referenceEvents(body string) []string {
	body = strings.ReplaceAll(body, "\r\n", "\n")
	body = strings.ReplaceAll(body, "\r", "\n")
	var out []string
	var data []string
	has := false
	lines := strings.Split(body, "\n")
	for i, line := range lines {
		last := i == len(lines)-1
		if line == "" {
			if has {
				out = append(out, strings.Join(data, "\n"))
			}
			data, has = nil, false
			continue
		}
		if line[0] != ':' {
			field, value, found := strings.Cut(line, ":")
			if found {
				value = strings.TrimPrefix(value, " ")
			}
			if field == "data" {
				data, has = append(data, value), true
			}
		}
		if last && has { // the body's end closes the event
			out = append(out, strings.Join(data, "\n"))
		}
	}
	return out
}

// FuzzEvents checks the streaming reader against the plain one.
func FuzzEvents(f *testing.F) {
	for _, s := range []string{
		"data: a\n\ndata: b\n\n", "data: a\r\n\r\n", "data: a\r\rdata: b", ": c\n\ndata:x\ndata: y\n\n",
		"event: e\nid: 1\ndata: [DONE]\n\n", "data\n\n", "\r\n\r\n", "data: {\"choices\":null}\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		if len(body) > MaxLineBytes/2 {
			return
		}
		got, err := readAll(strings.NewReader(body))
		require.NoError(t, err)
		assert.Equal(t, referenceEvents(body), got)
	})
}
