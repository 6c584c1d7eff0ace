package bedrock_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/schemas"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/eventstream"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/aws/smithy-go/transport/http/protocol/restjson1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/bedrock"
	"github.com/wsserver/wsserver/adapters/internal/modeltest"
	"github.com/wsserver/wsserver/test/fakebedrock"
)

// leanProtocol is the protocol NewClient installs.
func leanProtocol(t testing.TB) smithyhttp.ClientProtocol {
	t.Helper()
	c, err := bedrock.NewClient(t.Context(), bedrock.ClientConfig{
		Region:      "eu-west-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
	})
	require.NoError(t, err)
	p := c.Options().Protocol
	_, sdk := p.(*restjson1.Protocol)
	require.False(t, sdk, "NewClient keeps the SDK's protocol")
	return p
}

// frame encodes a message with the SDK's encoder; headers are name,
// value pairs of strings, in order.
func frame(t testing.TB, payload string, headers ...string) []byte {
	t.Helper()
	var msg eventstream.Message
	for i := 0; i+1 < len(headers); i += 2 {
		msg.Headers.Set(headers[i], eventstream.StringValue(headers[i+1]))
	}
	if payload != "" {
		msg.Payload = []byte(payload)
	}
	var b bytes.Buffer
	require.NoError(t, eventstream.NewEncoder().Encode(&b, msg))
	return b.Bytes()
}

// event is a frame as Bedrock sends an event.
func event(t testing.TB, typ, payload string) []byte {
	t.Helper()
	return frame(t, payload, ":event-type", typ, ":content-type", "application/json", ":message-type", "event")
}

func exception(t testing.TB, typ, payload string) []byte {
	t.Helper()
	return frame(t, payload, ":exception-type", typ, ":content-type", "application/json", ":message-type", "exception")
}

// textDelta is a text delta as Bedrock sends it, with its padding p
// unless pad is empty.
func textDelta(t testing.TB, index int, text, pad string) []byte {
	t.Helper()
	quoted, err := json.Marshal(text)
	require.NoError(t, err)
	p := ""
	if pad != "" {
		p = fmt.Sprintf(`,"p":"%s"`, pad)
	}
	return event(t, "contentBlockDelta", fmt.Sprintf(`{"contentBlockIndex":%d,"delta":{"text":%s}%s}`, index, quoted, p))
}

// decoded is what one DeserializeEventMessage call gave.
type decoded struct {
	Value smithy.Deserializable
	Err   error
	Left  int // bytes of the stream left unread, when there was no error
}

// decodeAll reads stream with p until the first error (io.EOF included).
func decodeAll(p smithyhttp.ClientProtocol, stream []byte) []decoded {
	r := bytes.NewReader(stream)
	var out []decoded
	for range len(stream)/16 + 2 {
		v, err := p.DeserializeEventMessage(schemas.ConverseStreamOutput, bedrockruntime.TypeRegistry, r)
		d := decoded{Value: v, Err: err}
		if err == nil {
			d.Left = r.Len()
		}
		out = append(out, d)
		if err != nil {
			break
		}
	}
	return out
}

// assertSameAsSDK decodes stream with lean and with a fresh SDK protocol
// and requires the same events and errors, one by one.
func assertSameAsSDK(t testing.TB, lean smithyhttp.ClientProtocol, stream []byte) []decoded {
	t.Helper()
	want := decodeAll(restjson1.New(nil), stream)
	got := decodeAll(lean, stream)
	require.Equal(t, want, got)
	return got
}

func TestProtocolDecodesLikeTheSDK(t *testing.T) {
	lean := leanProtocol(t)
	delta := func(payload string) []byte { return event(t, "contentBlockDelta", payload) }
	tests := []struct {
		name  string
		frame []byte
		want  smithy.Deserializable // nil: only the same as the SDK
		err   any                   // a pointer for errors.As
	}{
		{name: "text", frame: textDelta(t, 0, "Hello", "abcdef"),
			want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(0)), Delta: &types.ContentBlockDeltaMemberText{Value: "Hello"}}},
		{name: "text without padding", frame: textDelta(t, 2, " world", ""),
			want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(2)), Delta: &types.ContentBlockDeltaMemberText{Value: " world"}}},
		{name: "text unicode", frame: textDelta(t, 0, "héllo 世界 🙂", "xyz"),
			want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(0)), Delta: &types.ContentBlockDeltaMemberText{Value: "héllo 世界 🙂"}}},
		{name: "text escapes", frame: delta(`{"contentBlockIndex":0,"delta":{"text":"a\n\"b\" \\ \/ \t\r\b\f \u00e9\u4e16 \ud83d\ude42 \u0000"},"p":"ab"}`),
			want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(0)), Delta: &types.ContentBlockDeltaMemberText{Value: "a\n\"b\" \\ / \t\r\b\f é世 🙂 \x00"}}},
		{name: "text empty", frame: textDelta(t, 0, "", "abc"),
			want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(0)), Delta: &types.ContentBlockDeltaMemberText{Value: ""}}},
		{name: "text keys reordered", frame: delta(`{"p":"abc","delta":{"text":"x"},"contentBlockIndex":3}`),
			want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(3)), Delta: &types.ContentBlockDeltaMemberText{Value: "x"}}},
		{name: "text whitespace", frame: delta(" {\n\t\"contentBlockIndex\" : 1 ,\r\n \"delta\" : { \"text\" : \"a\" } } "),
			want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(1)), Delta: &types.ContentBlockDeltaMemberText{Value: "a"}}},
		{name: "text max index", frame: delta(`{"contentBlockIndex":2147483647,"delta":{"text":"a"}}`),
			want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(2147483647)), Delta: &types.ContentBlockDeltaMemberText{Value: "a"}}},
		{name: "index out of range", frame: delta(`{"contentBlockIndex":2147483648,"delta":{"text":"a"}}`)},
		{name: "index negative", frame: delta(`{"contentBlockIndex":-1,"delta":{"text":"a"}}`)},
		{name: "index fraction", frame: delta(`{"contentBlockIndex":1.0,"delta":{"text":"a"}}`)},
		{name: "index exponent", frame: delta(`{"contentBlockIndex":1e0,"delta":{"text":"a"}}`)},
		{name: "index leading zero", frame: delta(`{"contentBlockIndex":01,"delta":{"text":"a"}}`)},
		{name: "index null", frame: delta(`{"contentBlockIndex":null,"delta":{"text":"a"}}`)},
		{name: "index missing", frame: delta(`{"delta":{"text":"a"}}`)},
		{name: "index twice", frame: delta(`{"contentBlockIndex":1,"delta":{"text":"a"},"contentBlockIndex":2}`)},
		{name: "delta twice", frame: delta(`{"contentBlockIndex":1,"delta":{"text":"a"},"delta":{"text":"b"}}`)},
		{name: "delta null", frame: delta(`{"contentBlockIndex":1,"delta":null}`)},
		{name: "text null", frame: delta(`{"contentBlockIndex":1,"delta":{"text":null}}`)},
		{name: "text and another member", frame: delta(`{"contentBlockIndex":1,"delta":{"text":"a","toolUse":{"input":"{}"}}}`)},
		{name: "unknown key", frame: delta(`{"contentBlockIndex":1,"delta":{"text":"a"},"q":1}`)},
		{name: "escaped key", frame: delta(`{"contentBlockIndex":1,"delt\u0061":{"text":"a"}}`)},
		{name: "lone surrogate", frame: delta(`{"contentBlockIndex":0,"delta":{"text":"\ud83d!"}}`)},
		{name: "low surrogates", frame: delta(`{"contentBlockIndex":0,"delta":{"text":"\udc00\udc01"}}`)},
		{name: "high surrogates", frame: delta(`{"contentBlockIndex":0,"delta":{"text":"\ud83d\ud83d"}}`)},
		{name: "quote escape", frame: delta(`{"contentBlockIndex":0,"delta":{"text":"it\'s"}}`)},
		{name: "bad unicode escape", frame: delta(`{"contentBlockIndex":0,"delta":{"text":"\u12g4"}}`)},
		{name: "control character", frame: delta("{\"contentBlockIndex\":0,\"delta\":{\"text\":\"a\nb\"}}")},
		{name: "invalid utf-8", frame: delta("{\"contentBlockIndex\":0,\"delta\":{\"text\":\"a\xffb\"}}")},
		{name: "invalid utf-8 escaped", frame: delta("{\"contentBlockIndex\":0,\"delta\":{\"text\":\"a\xff\\nb\"}}")},
		{name: "padding escaped", frame: delta(`{"contentBlockIndex":0,"delta":{"text":"a"},"p":"a\"b"}`)},
		{name: "padding not a string", frame: delta(`{"contentBlockIndex":0,"delta":{"text":"a"},"p":12}`)},
		{name: "trailing bytes", frame: delta(`{"contentBlockIndex":0,"delta":{"text":"a"}} x`)},
		{name: "trailing comma", frame: delta(`{"contentBlockIndex":0,"delta":{"text":"a"},}`)},
		{name: "not an object", frame: delta(`[]`)},
		{name: "empty payload", frame: delta(``)},
		{name: "tool use", frame: delta(`{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}},"p":"abcd"}`),
			want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(1)), Delta: &types.ContentBlockDeltaMemberToolUse{Value: types.ToolUseBlockDelta{Input: ptr(`{"city":`)}}}},
		{name: "reasoning", frame: delta(`{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"hmm"}},"p":"ab"}`),
			want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(0)), Delta: &types.ContentBlockDeltaMemberReasoningContent{Value: &types.ReasoningContentBlockDeltaMemberText{Value: "hmm"}}}},
		{name: "message start", frame: event(t, "messageStart", `{"p":"abc","role":"assistant"}`),
			want: &types.MessageStartEvent{Role: types.ConversationRoleAssistant}},
		{name: "content block start", frame: event(t, "contentBlockStart", `{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"t1","name":"weather"}}}`)},
		{name: "content block stop", frame: event(t, "contentBlockStop", `{"contentBlockIndex":0,"p":"ab"}`),
			want: &types.ContentBlockStopEvent{ContentBlockIndex: ptr(int32(0))}},
		{name: "message stop", frame: event(t, "messageStop", `{"stopReason":"end_turn","p":"abc"}`),
			want: &types.MessageStopEvent{StopReason: types.StopReasonEndTurn}},
		{name: "metadata", frame: event(t, "metadata", `{"usage":{"inputTokens":12,"outputTokens":60,"totalTokens":72},"metrics":{"latencyMs":431},"p":"abc"}`)},
		{name: "unknown event", frame: event(t, "futureEvent", `{"a":1}`)},
		{name: "throttling exception", frame: exception(t, "throttlingException", `{"message":"Too many tokens, please wait."}`),
			err: new(*types.ThrottlingException)},
		{name: "model stream error", frame: exception(t, "modelStreamErrorException", `{"message":"boom","originalStatusCode":500}`),
			err: new(*types.ModelStreamErrorException)},
		{name: "internal server exception", frame: exception(t, "internalServerException", `{"message":"oops"}`),
			err: new(*types.InternalServerException)},
		{name: "unknown exception", frame: exception(t, "strangeException", `{"message":"odd"}`),
			err: new(*smithy.GenericAPIError)},
		{name: "error message", frame: frame(t, "", ":message-type", "error", ":error-code", "InternalFailure", ":error-message", "it broke"),
			err: new(*smithy.GenericAPIError)},
		{name: "unknown message type", frame: frame(t, `{}`, ":message-type", "weird", ":event-type", "contentBlockDelta"),
			err: new(*eventstream.UnknownMessageError)},
		{name: "no message type", frame: frame(t, `{"contentBlockIndex":0,"delta":{"text":"a"}}`, ":event-type", "contentBlockDelta")},
		{name: "no event type", frame: frame(t, `{"contentBlockIndex":0,"delta":{"text":"a"}}`, ":message-type", "event")},
		{name: "message type twice", frame: withHeaders(t, `{"contentBlockIndex":0,"delta":{"text":"a"}}`, eventstream.Headers{
			{Name: ":message-type", Value: eventstream.StringValue("exception")},
			{Name: ":event-type", Value: eventstream.StringValue("contentBlockDelta")},
			{Name: ":message-type", Value: eventstream.StringValue("event")},
		})},
		{name: "event type twice", frame: withHeaders(t, `{"contentBlockIndex":0,"delta":{"text":"a"}}`, eventstream.Headers{
			{Name: ":message-type", Value: eventstream.StringValue("event")},
			{Name: ":event-type", Value: eventstream.StringValue("messageStop")},
			{Name: ":event-type", Value: eventstream.StringValue("contentBlockDelta")},
		})},
		{name: "message type not a string", frame: withHeaders(t, `{"contentBlockIndex":0,"delta":{"text":"a"}}`, eventstream.Headers{
			{Name: ":message-type", Value: eventstream.BytesValue("event")},
			{Name: ":event-type", Value: eventstream.StringValue("contentBlockDelta")},
		})},
		{name: "every header type", frame: withHeaders(t, `{"contentBlockIndex":0,"delta":{"text":"typed"}}`, eventstream.Headers{
			{Name: "t", Value: eventstream.BoolValue(true)},
			{Name: "f", Value: eventstream.BoolValue(false)},
			{Name: "i8", Value: eventstream.Int8Value(-8)},
			{Name: "i16", Value: eventstream.Int16Value(-16)},
			{Name: "i32", Value: eventstream.Int32Value(-32)},
			{Name: "i64", Value: eventstream.Int64Value(-64)},
			{Name: "b", Value: eventstream.BytesValue{1, 2, 3}},
			{Name: ":message-type", Value: eventstream.StringValue("event")},
			{Name: "ts", Value: eventstream.TimestampValue{}},
			{Name: "uuid", Value: eventstream.UUIDValue{1, 2, 3}},
			{Name: "", Value: eventstream.StringValue("empty name")},
			{Name: ":event-type", Value: eventstream.StringValue("contentBlockDelta")},
		}), want: &types.ContentBlockDeltaEvent{ContentBlockIndex: ptr(int32(0)), Delta: &types.ContentBlockDeltaMemberText{Value: "typed"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := assertSameAsSDK(t, lean, tt.frame)
			require.NotEmpty(t, got)
			first := got[0]
			if tt.want != nil {
				require.NoError(t, first.Err)
				assert.Equal(t, tt.want, first.Value)
				require.Len(t, got, 2)
				require.ErrorIs(t, got[1].Err, io.EOF)
			}
			if tt.err != nil {
				assert.ErrorAs(t, first.Err, tt.err)
			}
		})
	}
}

func TestProtocolReadsAStream(t *testing.T) {
	lean := leanProtocol(t)
	stream := bytes.Join([][]byte{
		event(t, "messageStart", `{"role":"assistant"}`),
		textDelta(t, 0, "Hel", "abcdefgh"),
		textDelta(t, 0, "lo\n", "ab"),
		event(t, "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"toolUse":{"input":"{}"}}}`),
		textDelta(t, 0, "!", ""),
		event(t, "contentBlockStop", `{"contentBlockIndex":0}`),
		event(t, "messageStop", `{"stopReason":"end_turn"}`),
		event(t, "metadata", `{"usage":{"inputTokens":3,"outputTokens":4,"totalTokens":7},"metrics":{"latencyMs":1}}`),
	}, nil)

	got := assertSameAsSDK(t, lean, stream)
	require.Len(t, got, 9)
	var text strings.Builder
	for _, d := range got[:8] {
		require.NoError(t, d.Err)
		if e, ok := d.Value.(*types.ContentBlockDeltaEvent); ok {
			if tx, ok := e.Delta.(*types.ContentBlockDeltaMemberText); ok {
				text.WriteString(tx.Value)
			}
		}
	}
	assert.Equal(t, "Hello\n!", text.String())
	assert.Equal(t, 0, got[7].Left)
	assert.Equal(t, io.EOF, got[8].Err) //nolint:testifylint // the SDK ends a stream on io.EOF itself, not a wrapped one
}

// TestProtocolCorruptInput: the SDK reads what the lean path does not, so
// they fail alike. Upstream takes a stream that ends inside a message for
// its clean end (isEOF maps io.ErrUnexpectedEOF to io.EOF), and so do we;
// Model.Stream fails an answer that ends without messageStop.
func TestProtocolCorruptInput(t *testing.T) {
	lean := leanProtocol(t)
	good := textDelta(t, 0, "Hello", "abcdef")
	next := textDelta(t, 0, " world", "ab")
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x01
		return b
	}
	// withLens rewrites the prelude's lengths, with a valid prelude CRC.
	withLens := func(total, headers uint32) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint32(b[0:], total)
		binary.BigEndian.PutUint32(b[4:], headers)
		binary.BigEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[:8]))
		return b
	}
	headersLen := binary.BigEndian.Uint32(good[4:8])
	errRead := errors.New("connection reset")

	tests := []struct {
		name   string
		stream []byte
		fail   error // ends the stream instead of io.EOF
		want   func(t *testing.T, err error)
	}{
		{name: "bad prelude crc", stream: flip(9), want: isChecksumError},
		{name: "bad total length", stream: flip(3), want: isChecksumError},
		{name: "bad message crc", stream: flip(len(good) - 1), want: isChecksumError},
		{name: "bad payload byte", stream: flip(len(good) - 8), want: isChecksumError},
		{name: "zero length", stream: withLens(0, 0), want: func(t *testing.T, err error) {
			t.Helper()
			var le eventstream.LengthError
			assert.ErrorAs(t, err, &le)
		}},
		{name: "unknown header type", stream: unknownHeaderType(t), want: func(t *testing.T, err error) {
			t.Helper()
			assert.ErrorContains(t, err, "unknown value type")
		}},
		{name: "truncated prelude", stream: good[:5], want: isEOF},
		{name: "truncated body", stream: good[:len(good)-3], want: isEOF},
		{name: "truncated chunked body", stream: good[:20], fail: io.ErrUnexpectedEOF, want: isEOF},
		{name: "total beyond the stream", stream: withLens(1<<20, headersLen), want: isEOF},
		{name: "total beyond the lean buffer", stream: withLens(1<<20, headersLen), fail: errRead, want: isErrRead},
		{name: "total below headers", stream: append(withLens(20, headersLen), next...), want: isEOF},
		{name: "headers beyond total", stream: append(withLens(uint32(len(good)), uint32(len(good))), next...)},
		{name: "read error at start", fail: errRead, want: isErrRead},
		{name: "read error in prelude", stream: good[:4], fail: errRead, want: isErrRead},
		{name: "read error in body", stream: good[:30], fail: errRead, want: isErrRead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read := func(p smithyhttp.ClientProtocol) (smithy.Deserializable, error) {
				var r io.Reader = bytes.NewReader(tt.stream)
				if tt.fail != nil {
					r = io.MultiReader(r, failing{tt.fail})
				}
				return p.DeserializeEventMessage(schemas.ConverseStreamOutput, bedrockruntime.TypeRegistry, r)
			}
			wantV, wantErr := read(restjson1.New(nil))
			gotV, gotErr := read(lean)
			require.Equal(t, wantErr, gotErr)
			assert.Equal(t, wantV, gotV)
			require.Error(t, gotErr)
			if tt.want != nil {
				tt.want(t, gotErr)
			}
		})
	}
}

func isChecksumError(t *testing.T, err error) {
	t.Helper()
	var ce eventstream.ChecksumError
	assert.ErrorAs(t, err, &ce)
}

func isErrRead(t *testing.T, err error) {
	t.Helper()
	assert.ErrorContains(t, err, "connection reset")
}

func isEOF(t *testing.T, err error) {
	t.Helper()
	assert.Equal(t, io.EOF, err) //nolint:testifylint // exactly io.EOF, as EventStreamReader compares it
}

// failing fails every read with err, after the bytes before it.
type failing struct{ err error }

func (f failing) Read([]byte) (int, error) { return 0, f.err }

// unknownHeaderType is a text delta whose last header has type 10, which
// does not exist.
func unknownHeaderType(t testing.TB) []byte {
	t.Helper()
	var headers bytes.Buffer
	require.NoError(t, eventstream.EncodeHeaders(&headers, eventstream.Headers{
		{Name: ":message-type", Value: eventstream.StringValue("event")},
		{Name: ":event-type", Value: eventstream.StringValue("contentBlockDelta")},
	}))
	headers.Write([]byte{1, 'x', 10})
	return rawFrame(headers.Bytes(), []byte(`{"contentBlockIndex":0,"delta":{"text":"a"}}`))
}

// rawFrame frames headers and payload as they are.
func rawFrame(headers, payload []byte) []byte {
	total := 16 + len(headers) + len(payload)
	b := make([]byte, 12, total)
	binary.BigEndian.PutUint32(b[0:], uint32(total))
	binary.BigEndian.PutUint32(b[4:], uint32(len(headers)))
	binary.BigEndian.PutUint32(b[8:], crc32.ChecksumIEEE(b[:8]))
	b = append(b, headers...)
	b = append(b, payload...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

func withHeaders(t testing.TB, payload string, hs eventstream.Headers) []byte {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, eventstream.NewEncoder().Encode(&b, eventstream.Message{Headers: hs, Payload: []byte(payload)}))
	return b.Bytes()
}

// TestProtocolTextDeltaAllocs: a text delta costs its string, the event,
// the delta and the index, and no buffer.
func TestProtocolTextDeltaAllocs(t *testing.T) {
	lean := leanProtocol(t)
	for _, f := range [][]byte{
		textDelta(t, 0, "Hello", "abcdefghijkl"),
		textDelta(t, 0, "line\n\"quoted\" 🙂", ""),
		textDelta(t, 0, strings.Repeat("long text ", 500), "ab"),
	} {
		r := bytes.NewReader(f)
		allocs := testing.AllocsPerRun(100, func() {
			r.Reset(f)
			if _, err := lean.DeserializeEventMessage(schemas.ConverseStreamOutput, bedrockruntime.TypeRegistry, r); err != nil {
				t.Fatal(err)
			}
		})
		assert.LessOrEqual(t, allocs, 5.0)
	}
}

// TestStreamConcurrent streams answers on one client at once: with the
// SDK's own protocol the race detector sees its shared decoder.
func TestStreamConcurrent(t *testing.T) {
	deltas := make([]string, 200)
	for i := range deltas {
		deltas[i] = fmt.Sprintf("t%d ", i)
	}
	m, _ := newModel(t, fakebedrock.Script{Deltas: deltas}, nil)

	const streams = 8
	got := make([][]string, streams)
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			_, errs[i] = m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got[i]))
		})
	}
	wg.Wait()
	for i := range streams {
		require.NoError(t, errs[i])
		assert.Equal(t, deltas, got[i])
	}
}

// FuzzProtocolMatchesSDK: for any stream, the lean protocol gives what the
// SDK's gives, message by message, up to the first error or io.EOF.
func FuzzProtocolMatchesSDK(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	lean := leanProtocol(f)
	f.Fuzz(func(t *testing.T, stream []byte) {
		want := decodeAll(restjson1.New(nil), stream)
		got := decodeAll(lean, stream)
		if !assert.ObjectsAreEqual(want, got) {
			t.Fatalf("lean protocol differs from the SDK's:\nsdk:  %#v\nlean: %#v", want, got)
		}
	})
}

// FuzzProtocolFrameMatchesSDK is FuzzProtocolMatchesSDK on single frames
// whose lengths and checksums are made right, so that the fuzzer reaches
// the header walk and the JSON of the lean path, past the CRCs.
func FuzzProtocolFrameMatchesSDK(f *testing.F) {
	for _, s := range fuzzSeeds(f)[1:] {
		if len(s) < 16 {
			continue
		}
		headersEnd := 12 + binary.BigEndian.Uint32(s[4:8])
		if int(headersEnd) <= len(s)-4 {
			f.Add(s[12:headersEnd], s[headersEnd:len(s)-4])
		}
	}
	lean := leanProtocol(f)
	f.Fuzz(func(t *testing.T, headers, payload []byte) {
		stream := rawFrame(headers, payload)
		want := decodeAll(restjson1.New(nil), stream)
		got := decodeAll(lean, stream)
		if !assert.ObjectsAreEqual(want, got) {
			t.Fatalf("lean protocol differs from the SDK's:\nsdk:  %#v\nlean: %#v", want, got)
		}
	})
}

// FuzzProtocolTextMatchesSDK is FuzzProtocolMatchesSDK on text deltas of
// Bedrock's shape, where the lean path answers: any text, escaped by
// encoding/json or, with escapeAll, every non-ASCII rune as \u (UTF-16
// pairs beyond the BMP), any index.
func FuzzProtocolTextMatchesSDK(f *testing.F) {
	for _, s := range []string{"Hello", "", "héllo\n\"🙂\"", "<a&b>", "\x00\x1f\x7f", "a\xffb", "\u2028"} {
		f.Add(s, int64(0), false)
		f.Add(s, int64(1), true)
	}
	f.Add("x", int64(math.MaxInt32)+1, false)
	f.Add("x", int64(-1), false)
	lean := leanProtocol(f)
	f.Fuzz(func(t *testing.T, text string, index int64, escapeAll bool) {
		quoted, err := json.Marshal(text)
		require.NoError(t, err)
		if escapeAll {
			quoted = escapeNonASCII(quoted)
		}
		payload := fmt.Sprintf(`{"contentBlockIndex":%d,"delta":{"text":%s},"p":"abcdef"}`, index, quoted)
		stream := event(t, "contentBlockDelta", payload)
		want := decodeAll(restjson1.New(nil), stream)
		got := decodeAll(lean, stream)
		if !assert.ObjectsAreEqual(want, got) {
			t.Fatalf("lean protocol differs from the SDK's on %s:\nsdk:  %#v\nlean: %#v", payload, want, got)
		}
	})
}

// escapeNonASCII writes every non-ASCII rune of a JSON string as \u.
func escapeNonASCII(quoted []byte) []byte {
	var b []byte
	for _, r := range string(quoted) {
		if r < utf8.RuneSelf {
			b = append(b, byte(r))
			continue
		}
		r1, r2 := utf16.EncodeRune(r)
		if r1 == utf8.RuneError {
			r1 = r
		}
		b = fmt.Appendf(b, `\u%04x`, r1)
		if r2 != utf8.RuneError {
			b = fmt.Appendf(b, `\u%04x`, r2)
		}
	}
	return b
}

func fuzzSeeds(t testing.TB) [][]byte {
	t.Helper()
	frames := [][]byte{
		event(t, "messageStart", `{"p":"abc","role":"assistant"}`),
		textDelta(t, 0, "Hello", "abcdef"),
		textDelta(t, 0, "héllo\n\"🙂\"", ""),
		event(t, "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"\u00e9\ud83d\ude42\/"},"p":"a"}`),
		event(t, "contentBlockDelta", `{"p":"x", "delta" : {"text":""} ,"contentBlockIndex":7}`),
		event(t, "contentBlockDelta", `{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"a\":"}}}`),
		event(t, "contentBlockDelta", `{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"hmm"}}}`),
		event(t, "contentBlockStop", `{"contentBlockIndex":0}`),
		event(t, "messageStop", `{"stopReason":"end_turn"}`),
		event(t, "metadata", `{"usage":{"inputTokens":1,"outputTokens":2,"totalTokens":3},"metrics":{"latencyMs":1}}`),
		event(t, "futureEvent", `{}`),
		exception(t, "throttlingException", `{"message":"slow down"}`),
		frame(t, "", ":message-type", "error", ":error-code", "E", ":error-message", "m"),
		unknownHeaderType(t),
	}
	seeds := [][]byte{bytes.Join(frames, nil)}
	for _, f := range frames {
		seeds = append(seeds, f)
		seeds = append(seeds, f[:len(f)-1])
	}
	return seeds
}

func ptr[T any](v T) *T { return &v }
