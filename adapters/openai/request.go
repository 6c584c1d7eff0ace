package openai

import (
	"strings"

	"github.com/wsserver/wsserver/adapters/internal/turns"
	"github.com/wsserver/wsserver/core/prompt"
	"github.com/wsserver/wsserver/ports"
)

// message is one message of a chat completion request.
type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// streamOptions asks for the usage chunk at the end of a stream.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// body is a chat completion request.
type body struct {
	Model         string         `json:"model"`
	Messages      []message      `json:"messages"`
	Stream        bool           `json:"stream,omitempty"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`
	MaxTokens     int            `json:"max_tokens,omitempty"`
	Temperature   *float32       `json:"temperature,omitempty"`
}

// request maps req to a chat completion, as the bedrock adapter maps it to
// Converse, so that a model answers alike on either:
//
//   - the system prompt, the client's data and a rewrite's instructions
//     are one system message, their parts apart: the chat templates of
//     many open models (Llama, Mistral, Gemma) accept a single system
//     message, first;
//   - the client's data is JSON between <data> tags, introduced as
//     context and not as instructions;
//   - for chats, the thread's messages are merged into alternating roles
//     starting with the user's, the leading answers dropped, since those
//     same templates refuse anything else;
//   - for summaries and classifications, the thread is one user message,
//     a transcript, so that the model reads it rather than continues it
//     (a summarised thread may end with an answer).
func (m *Model) request(req ports.ChatRequest) body {
	b := body{Model: m.modelID(req.Purpose), MaxTokens: m.cfg.MaxTokens, Temperature: m.cfg.Temperature}
	var system []string
	if req.System != "" {
		system = append(system, req.System)
	}
	if d := prompt.Data(req.Data); d != "" {
		system = append(system, d)
	}
	if rw := req.Rewrite; rw != nil {
		system = append(system, prompt.Rewrite(rw))
	}
	if len(system) > 0 {
		b.Messages = append(b.Messages, message{Role: "system", Content: strings.Join(system, "\n\n")})
	}
	switch req.Purpose {
	case ports.PurposeSummary, ports.PurposeClassify:
		b.Messages = append(b.Messages, message{Role: "user", Content: prompt.Transcript(req.Messages)})
	default:
		b.Messages = append(b.Messages, conversation(req.Messages)...)
	}
	return b
}

// conversation maps msgs to alternating messages starting with the
// user's (turns.Of).
func conversation(msgs []ports.Message) []message {
	var out []message
	for _, t := range turns.Of(msgs) {
		role := "user"
		if t.Role == ports.RoleAssistant {
			role = "assistant"
		}
		out = append(out, message{Role: role, Content: t.Text})
	}
	return out
}
