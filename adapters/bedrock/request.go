package bedrock

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"

	"github.com/wsserver/wsserver/adapters/internal/turns"
	"github.com/wsserver/wsserver/core/prompt"
	"github.com/wsserver/wsserver/ports"
)

// request is a ports.ChatRequest in Converse's shapes.
type request struct {
	modelID   string
	system    []types.SystemContentBlock
	messages  []types.Message
	inference *types.InferenceConfiguration
	guardrail *types.GuardrailStreamConfiguration // chats only, when Bedrock checks the stream
}

// request maps req to Converse:
//
//   - the system prompt is the first system block;
//   - the client's data goes in a system block of its own, as JSON between
//     <data> tags, introduced as context and not as instructions: in the
//     system prompt it is not mistaken for something the user wrote, and
//     it does not change the conversation's alternating roles;
//   - a rewrite is told in a last system block: what was already sent,
//     what failed and why, and that the answer continues what was sent;
//   - for chats, the thread's messages become Converse messages, the
//     consecutive messages of one role merged into one and the leading
//     answers dropped, since Converse wants alternating roles starting
//     with the user;
//   - for summaries and classifications, the thread is one user message,
//     a transcript, so that the model reads it rather than continues it
//     (a summarised thread may end with an answer).
func (m *Model) request(req ports.ChatRequest) request {
	r := request{modelID: m.modelID(req.Purpose)}
	if req.System != "" {
		r.system = append(r.system, &types.SystemContentBlockMemberText{Value: req.System})
	}
	if d := prompt.Data(req.Data); d != "" {
		r.system = append(r.system, &types.SystemContentBlockMemberText{Value: d})
	}
	if rw := req.Rewrite; rw != nil {
		r.system = append(r.system, &types.SystemContentBlockMemberText{Value: prompt.Rewrite(rw)})
	}
	switch req.Purpose {
	case ports.PurposeSummary, ports.PurposeClassify:
		r.messages = []types.Message{textMessage(types.ConversationRoleUser, prompt.Transcript(req.Messages))}
	default:
		r.messages = conversation(req.Messages)
		r.guardrail = m.cfg.GuardrailStream.config()
	}
	if m.cfg.MaxTokens > 0 || m.cfg.Temperature != nil {
		r.inference = &types.InferenceConfiguration{Temperature: m.cfg.Temperature}
		if m.cfg.MaxTokens > 0 {
			r.inference.MaxTokens = aws.Int32(int32(min(m.cfg.MaxTokens, 1<<31-1)))
		}
	}
	return r
}

func textMessage(role types.ConversationRole, text string) types.Message {
	return types.Message{Role: role, Content: []types.ContentBlock{&types.ContentBlockMemberText{Value: text}}}
}

// conversation maps msgs to alternating Converse messages starting with
// the user's (turns.Of); Converse refuses blank text.
func conversation(msgs []ports.Message) []types.Message {
	var out []types.Message
	for _, t := range turns.Of(msgs) {
		role := types.ConversationRoleUser
		if t.Role == ports.RoleAssistant {
			role = types.ConversationRoleAssistant
		}
		out = append(out, textMessage(role, t.Text))
	}
	return out
}
