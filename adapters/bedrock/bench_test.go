package bedrock_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/schemas"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/aws/smithy-go/transport/http/protocol/restjson1"

	"github.com/wsserver/wsserver/adapters/internal/modeltest"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/fakebedrock"
)

// BenchmarkStream is one 60-token answer streamed through the real SDK client from the fake (no
// pacing): the adapter's cost per chat, with the fake's on the same
// machine. Divide by 60 for a token.
func BenchmarkStream(b *testing.B) {
	modeltest.BenchmarkStream(b, "word ", func(b *testing.B, deltas []string) ports.ChatModel {
		b.Helper()
		m, _ := newModel(b, fakebedrock.Script{Deltas: deltas}, nil)
		return m
	})
}

// BenchmarkDecodeEvents decodes one realistic answer's event stream
// (messageStart, 60 one-word text deltas padded like Bedrock's,
// contentBlockStop, messageStop, metadata) with the SDK's protocol and
// with the one NewClient installs. Divide by 64 for an event.
func BenchmarkDecodeEvents(b *testing.B) {
	const pad = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	frames := [][]byte{event(b, "messageStart", `{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW","role":"assistant"}`)}
	for i := range 60 {
		frames = append(frames, textDelta(b, 0, "word ", pad[:1+i%len(pad)]))
	}
	frames = append(frames,
		event(b, "contentBlockStop", `{"contentBlockIndex":0,"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRS"}`),
		event(b, "messageStop", `{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN","stopReason":"end_turn"}`),
		event(b, "metadata", `{"metrics":{"latencyMs":1213},"p":"abcdefghijklmnopqrstuvwxyzABCDEF","usage":{"inputTokens":311,"outputTokens":60,"totalTokens":371}}`),
	)
	stream := bytes.Join(frames, nil)

	for _, bc := range []struct {
		name     string
		protocol smithyhttp.ClientProtocol
	}{
		{"sdk", restjson1.New(nil)},
		{"lean", leanProtocol(b)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := bytes.NewReader(stream)
			b.ReportAllocs()
			b.SetBytes(int64(len(stream)))
			for b.Loop() {
				r.Reset(stream)
				n := 0
				for {
					_, err := bc.protocol.DeserializeEventMessage(schemas.ConverseStreamOutput, bedrockruntime.TypeRegistry, r)
					if err == io.EOF { //nolint:errorlint // the SDK's end of stream
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
				if n != len(frames) {
					b.Fatalf("got %d events, want %d", n, len(frames))
				}
			}
		})
	}
}
