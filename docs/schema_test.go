package docs_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/docs"
	"github.com/wsserver/wsserver/test/schema"
)

// TestAsyncAPIExamples compiles the payload schema of every message of
// asyncapi.yaml and validates each of its examples against it, so that
// the examples a reader copies are messages the schemas accept.
func TestAsyncAPIExamples(t *testing.T) {
	doc, c, err := schema.Compiler(docs.AsyncAPI, "https://wsserver.invalid/asyncapi.json")
	require.NoError(t, err)
	assert.Equal(t, "3.0.0", doc["asyncapi"])
	msgs, _ := schema.Lookup(doc, "/components/messages").(map[string]any)
	require.NotEmpty(t, msgs)
	for name, m := range msgs {
		t.Run(name, func(t *testing.T) {
			sch, err := c.Compile("https://wsserver.invalid/asyncapi.json#/components/messages/" + name + "/payload")
			require.NoError(t, err)
			typ := schema.Lookup(m, "/payload/properties/type/const")
			require.NotEmpty(t, typ, "every message has a const type")
			examples, _ := schema.Lookup(m, "/examples").([]any)
			require.NotEmpty(t, examples, "every message has an example")
			for _, ex := range examples {
				p := schema.Lookup(ex, "/payload")
				if err := sch.Validate(p); err != nil {
					t.Errorf("example %v: %v", schema.Lookup(ex, "/name"), err)
				}
				assert.Equal(t, typ, schema.Lookup(p, "/type"), "the example's type")
			}
		})
	}
	// Every message is on a channel, and every channel message is in an
	// operation: nothing documented is left out of what tools generate.
	used := map[string]bool{}
	for ch, v := range schema.Lookup(doc, "/channels").(map[string]any) {
		for key, ref := range schema.Lookup(v, "/messages").(map[string]any) {
			used[strings.TrimPrefix(schema.Lookup(ref, "/$ref").(string), "#/components/messages/")] = true
			inOp := false
			for _, op := range schema.Lookup(doc, "/operations").(map[string]any) {
				for _, r := range schema.Lookup(op, "/messages").([]any) {
					inOp = inOp || schema.Lookup(r, "/$ref") == "#/channels/"+ch+"/messages/"+key
				}
			}
			assert.True(t, inOp, "channel %s message %s is in an operation", ch, key)
		}
	}
	for name := range msgs {
		assert.True(t, used[name], "message %s is on a channel", name)
	}
}

// TestAsyncAPIIsStrict shows that the schemas the end-to-end tests check
// the server against refuse what the server must not send: a field too
// many, a field missing, an undocumented code or type.
func TestAsyncAPIIsStrict(t *testing.T) {
	p, err := schema.AsyncAPI()
	require.NoError(t, err)
	tests := []struct {
		ep    schema.Endpoint
		frame string
		ok    bool
	}{
		{schema.Chat, `{"type":"token","content":"Hi"}`, true},
		{schema.Chat, `{"type":"token","content":"Hi","extra":1}`, false},
		{schema.Chat, `{"type":"token"}`, false},
		{schema.Chat, `{"type":"end","usage":{"input_tokens":1,"output_tokens":2},"cancelled":false}`, true},
		{schema.Chat, `{"type":"end"}`, false},
		{schema.Chat, `{"type":"end","usage":{"input_tokens":-1,"output_tokens":2},"cancelled":false}`, false},
		{schema.Chat, `{"type":"error","code":"thread_busy","message":"busy"}`, true},
		{schema.Chat, `{"type":"error","code":"hello_required","message":"chat has no hello"}`, false},
		{schema.Chat, `{"type":"error","code":"not_a_code","message":"x"}`, false},
		{schema.Chat, `{"type":"hello_ok","session_id":"s","connection_id":"c"}`, false},
		{schema.Chat, `{"type":"escalation","should_escalate":false,"reason":"rule"}`, false},
		{schema.Chat, `{"type":"session_started","session_id":"bad id","thread_id":"t","connection_id":"c"}`, false},
		{schema.Chat, `[]`, false},
		{schema.Chat, `not json`, false},
		{schema.Session, `{"type":"session_message","user_type":"a","client_type":null,"msg":"m","data":null}`, true},
		{schema.Session, `{"type":"session_message","user_type":"a","client_type":null,"msg":"m"}`, false},
		{schema.Session, `{"type":"presence","session_id":"s","count":0,"connections":[]}`, true},
		{schema.Session, `{"type":"presence","session_id":"s","count":1,"connections":[{"connection_id":"c","user_type":"a"}]}`, false},
		{schema.Session, `{"type":"chat_event","thread_id":"t","event":{"kind":"answer","content":"x"}}`, true},
		{schema.Session, `{"type":"chat_event","thread_id":"t","event":{"kind":"answer","content":"x","reason":"rule"}}`, false},
		{schema.Session, `{"type":"chat_event","thread_id":"t","event":{"kind":"escalation","content":"x"}}`, false},
		{schema.Session, `{"type":"error","code":"data_required","message":"x"}`, false},
		{schema.Session, `{"type":"token","content":"x"}`, false},
	}
	for _, tt := range tests {
		if err := p.Validate(tt.ep, []byte(tt.frame)); (err == nil) != tt.ok {
			t.Errorf("%s %s: valid %v, want %v (%v)", tt.ep, tt.frame, err == nil, tt.ok, err)
		}
	}
}

// TestOpenAPIExamples compiles every schema of openapi.yaml and validates
// every example of a request or response body against its schema.
func TestOpenAPIExamples(t *testing.T) {
	const url = "https://wsserver.invalid/openapi.json"
	doc, c, err := schema.Compiler(docs.OpenAPI, url)
	require.NoError(t, err)
	assert.Equal(t, "3.1.0", doc["openapi"])
	for name := range schema.Lookup(doc, "/components/schemas").(map[string]any) {
		if _, err := c.Compile(url + "#/components/schemas/" + name); err != nil {
			t.Errorf("schema %s: %v", name, err)
		}
	}
	paths := schema.Lookup(doc, "/paths").(map[string]any)
	for _, want := range []string{"/api/csrf-token/", "/api/thread/history", "/api/thread/summarize", "/health/", "/ready/"} {
		assert.Contains(t, paths, want)
	}
	examples := 0
	for path, item := range paths {
		for method, op := range item.(map[string]any) {
			var bodies []string
			if schema.Lookup(op, "/requestBody") != nil {
				bodies = append(bodies, "/requestBody")
			}
			for status := range schema.Lookup(op, "/responses").(map[string]any) {
				bodies = append(bodies, "/responses/"+status)
			}
			for _, b := range bodies {
				media, _ := schema.Lookup(op, b+"/content").(map[string]any)
				if ref, ok := schema.Lookup(op, b+"/$ref").(string); ok {
					media, _ = schema.Lookup(doc, strings.TrimPrefix(ref, "#")+"/content").(map[string]any)
				}
				for mt, m := range media {
					ex := schema.Lookup(m, "/example")
					if ex == nil {
						continue
					}
					ptr := "/paths/" + strings.ReplaceAll(path, "/", "~1") + "/" + method + b + "/content/" + strings.ReplaceAll(mt, "/", "~1") + "/schema"
					if ref, ok := schema.Lookup(op, b+"/$ref").(string); ok {
						ptr = strings.TrimPrefix(ref, "#") + "/content/" + strings.ReplaceAll(mt, "/", "~1") + "/schema"
					}
					sch, err := c.Compile(url + "#" + ptr)
					if err != nil {
						t.Errorf("%s %s %s: %v", method, path, b, err)
						continue
					}
					if err := sch.Validate(ex); err != nil {
						t.Errorf("%s %s %s example: %v", method, path, b, err)
					}
					examples++
				}
			}
		}
	}
	assert.GreaterOrEqual(t, examples, 10, "the bodies have examples")
}

// TestProtocolNamesEveryErrorCode keeps PROTOCOL.md's table of WebSocket
// error codes and asyncapi.yaml's enums the same, endpoint by endpoint.
func TestProtocolNamesEveryErrorCode(t *testing.T) {
	p, err := schema.AsyncAPI()
	require.NoError(t, err)
	md, err := os.ReadFile("PROTOCOL.md")
	require.NoError(t, err)
	table := section(t, string(md), "### 6.1 ")
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| ([a-z, ]+) \\|")
	got := map[schema.Endpoint][]string{}
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		for ep := range strings.SplitSeq(m[2], ",") {
			got[schema.Endpoint(strings.TrimSpace(ep))] = append(got[schema.Endpoint(strings.TrimSpace(ep))], m[1])
		}
	}
	for _, ep := range []schema.Endpoint{schema.Chat, schema.Session} {
		slices.Sort(got[ep])
		assert.Equal(t, p.ErrorCodes(ep), got[ep], "PROTOCOL.md §6.1 and asyncapi.yaml list the same %s codes", ep)
	}
}

// TestProtocolNamesEveryHTTPErrorCode keeps PROTOCOL.md's table of HTTP
// error codes and the ErrorCode enum of openapi.yaml the same.
func TestProtocolNamesEveryHTTPErrorCode(t *testing.T) {
	api, err := schema.OpenAPI()
	require.NoError(t, err)
	enum := api.ErrorCodes()
	require.NotEmpty(t, enum, "openapi.yaml's Error schema lists its codes")
	md, err := os.ReadFile("PROTOCOL.md")
	require.NoError(t, err)
	table := section(t, string(md), "### 6.2 ")
	var got []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(table, -1) {
		got = append(got, m[1])
	}
	slices.Sort(got)
	assert.Equal(t, enum, got)
}

// section returns the text of md from the heading that starts with head
// to the next heading of the same or a higher level.
func section(t *testing.T, md, head string) string {
	t.Helper()
	i := strings.Index(md, "\n"+head)
	require.GreaterOrEqual(t, i, 0, "PROTOCOL.md has %q", head)
	rest := md[i+1+len(head):]
	level := strings.Count(strings.Fields(head)[0], "#")
	for _, stop := range []string{"\n## ", "\n### "}[:level-1] {
		if j := strings.Index(rest, stop); j >= 0 {
			rest = rest[:j]
		}
	}
	return rest
}

// TestOpenAPIValidatesAnswers shows what the end-to-end tests' check of
// every HTTP answer refuses: an undocumented path or status, and a body
// that does not match.
func TestOpenAPIValidatesAnswers(t *testing.T) {
	api, err := schema.OpenAPI()
	require.NoError(t, err)
	tests := []struct {
		method, path string
		status       int
		body         string
		ok           bool
	}{
		{"GET", "/health/", 200, `{"status":"ok","instance_id":"a"}`, true},
		{"GET", "/health/", 200, `{"status":"ok"}`, false},
		{"GET", "/health/", 500, `{"error":{"code":"internal","message":"x"}}`, false},
		{"GET", "/ready/", 503, `{"status":"unavailable","instance_id":"a","failing":{"redis":"unavailable"}}`, true},
		{"GET", "/api/csrf-token/", 200, `{"csrfToken":"t"}`, true},
		{"POST", "/api/thread/history", 404, `{"error":{"code":"thread_not_found","message":"no thread"}}`, true},
		{"POST", "/api/thread/history", 404, `{"error":{"code":"gone","message":"no thread"}}`, false},
		{"POST", "/api/thread/history", 200, `{"thread_id":"t","messages":[{"id":"1","role":"user","content":"hi","created_at":"2026-12-03T14:02:11.123456Z"}]}`, true},
		{"POST", "/api/thread/history", 200, `{"thread_id":"t","messages":[{"id":"1","role":"user","content":"hi","created_at":"2026-12-03T14:02:11Z"}]}`, false},
		{"POST", "/api/thread/summarize", 200, `{"thread_id":"t","summary":"s","model":"x"}`, false},
		{"POST", "/api/nothing", 200, `{}`, false},
	}
	for _, tt := range tests {
		if err := api.ValidateResponse(tt.method, tt.path, tt.status, []byte(tt.body)); (err == nil) != tt.ok {
			t.Errorf("%s %s %d %s: valid %v, want %v (%v)", tt.method, tt.path, tt.status, tt.body, err == nil, tt.ok, err)
		}
	}
}

// TestOpenAPIErrorBodies shows how the answers openapi.yaml does not
// describe by path (refused WebSocket upgrades, unknown paths and methods)
// are checked: against its Error schema alone.
func TestOpenAPIErrorBodies(t *testing.T) {
	api, err := schema.OpenAPI()
	require.NoError(t, err)
	assert.True(t, api.Documents("POST", "/api/thread/history"))
	assert.False(t, api.Documents("GET", "/api/thread/history"), "a method the path does not have")
	assert.False(t, api.Documents("GET", "/ws/chat/"), "the WebSockets are asyncapi.yaml's")
	tests := []struct {
		body string
		ok   bool
	}{
		{`{"error":{"code":"draining","message":"this instance is shutting down"}}`, true},
		{`{"error":{"code":"gone","message":"x"}}`, false},
		{`{"error":{"code":"draining"}}`, false},
		{`{"error":{"code":"draining","message":"x","detail":"y"}}`, false},
		{`{"code":"draining","message":"x"}`, false},
		{`not json`, false},
	}
	for _, tt := range tests {
		if err := api.ValidateError([]byte(tt.body)); (err == nil) != tt.ok {
			t.Errorf("%s: valid %v, want %v (%v)", tt.body, err == nil, tt.ok, err)
		}
	}
}
