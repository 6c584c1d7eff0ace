package openai_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wsserver/wsserver/adapters/openai"
	"github.com/wsserver/wsserver/ports"
)

// body answers every request with one stream body, in memory.
type body string

func (b body) RoundTrip(r *http.Request) (*http.Response, error) {
	_ = r.Body.Close()
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"text/event-stream"}},
		Body:       io.NopCloser(strings.NewReader(string(b))),
		Request:    r,
	}, nil
}

// FuzzStream reads any body as a stream: Stream never panics, gives no
// empty piece, and either fails or ends with a stop reason; a body that
// ends well is read alike whatever its line endings.
func FuzzStream(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.sse"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(raw))
	}
	f.Add("data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"length\"}]}\n\n")
	f.Add("data: {\"error\":\"boom\"}\n\n")
	f.Add(": ping\r\n\r\ndata: [DONE]\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		if len(raw) > 1<<16 {
			return
		}
		stream := func(raw string) (string, ports.Reply, error) {
			m, err := openai.New(openai.Config{
				BaseURL: "http://fuzz.invalid/v1", ChatModelID: "m", MaxAttempts: 1,
				HTTPClient: &http.Client{Transport: body(raw)},
			})
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			reply, err := m.Stream(t.Context(), ports.ChatRequest{}, func(p string) error {
				if p == "" {
					t.Fatal("an empty piece")
				}
				got.WriteString(p)
				return nil
			})
			return got.String(), reply, err
		}
		text, reply, err := stream(raw)
		if err == nil && reply.Stop == "" {
			t.Fatal("no error and no stop reason")
		}
		if err != nil {
			return
		}
		crlf := strings.ReplaceAll(strings.ReplaceAll(raw, "\r\n", "\n"), "\n", "\r\n")
		text2, reply2, err2 := stream(crlf)
		if err2 != nil || text2 != text || reply2 != reply {
			t.Fatalf("with CRLF: %q %v %v, without: %q %v", text2, reply2, err2, text, reply)
		}
	})
}
