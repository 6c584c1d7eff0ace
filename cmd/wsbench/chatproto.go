package main

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// chatKind is the type of a chat server message, as far as wsbench cares.
type chatKind uint8

const (
	chatOther chatKind = iota
	chatStarted
	chatToken
	chatEscalation
	chatEnd
	chatError
)

// chatMsg holds the few fields wsbench reads from a chat server message.
// The slices alias the message and keep JSON escapes (see jsonString).
type chatMsg struct {
	kind     chatKind
	threadID []byte // session_started
	reason   []byte // escalation
	code     []byte // error
	text     []byte // error: its message
}

// tokenPrefix begins every token message of wsserver, which writes type
// first and without spaces. Tokens are nearly all the traffic, so they are
// recognised by it without scanning the content.
var tokenPrefix = []byte(`{"type":"token",`)

// parseChat reads a chat server message: tokens by their prefix, anything
// else (and tokens of servers that space or order their JSON differently)
// by one scan that decodes only type, thread_id, reason, code and message.
func parseChat(b []byte, m *chatMsg) error {
	*m = chatMsg{}
	if bytes.HasPrefix(b, tokenPrefix) {
		m.kind = chatToken
		return nil
	}
	s := scanner{b: b}
	return s.object(func(key []byte) bool {
		switch string(key) {
		case "type":
			return kindInto(&s, &m.kind, chatKindOf)
		case "thread_id":
			return s.strInto(&m.threadID)
		case "reason":
			return s.strInto(&m.reason)
		case "code":
			return s.strInto(&m.code)
		case "message":
			return s.strInto(&m.text)
		}
		return s.skip()
	})
}

func chatKindOf(v []byte) chatKind {
	switch string(v) {
	case "token":
		return chatToken
	case "session_started":
		return chatStarted
	case "escalation":
		return chatEscalation
	case "end":
		return chatEnd
	case "error":
		return chatError
	}
	return chatOther
}

// chatErrorName is the tally key of an error event: its code, or its text
// when it has none.
func chatErrorName(m *chatMsg) string {
	if len(m.code) > 0 {
		return "error " + jsonString(m.code)
	}
	return "error " + strconv.Quote(truncate(jsonString(m.text), 60))
}

// chatMessage returns the chat message cfg sends, split around the thread
// id with -new-thread (else tail is empty).
func chatMessage(cfg chatConfig) (head, tail []byte) {
	text, _ := json.Marshal(cfg.Message) // a string always encodes
	channel, _ := json.Marshal(cfg.Channel)
	head = append([]byte(`{"type":"chat","message":`), text...)
	if cfg.NewThread {
		head = append(head, `,"thread_id":"`...)
		tail = []byte(`"`)
	}
	tail = append(append(tail, `,"channel":`...), channel...)
	if cfg.Data != "" {
		tail = append(append(tail, `,"data":`...), cfg.Data...)
	}
	if cfg.Resumable {
		tail = append(tail, `,"resumable":true`...)
	}
	tail = append(tail, '}')
	if !cfg.NewThread {
		return append(head, tail...), nil
	}
	return head, tail
}
