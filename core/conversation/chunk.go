package conversation

import (
	"time"
	"unicode"
	"unicode/utf8"
)

// Chunks: what the guardrail is given at a time.
//
// The model's text is held until the guardrail passes it, so the first
// check decides when the first token goes out, and every check is a call
// (on Bedrock, billed by text units of up to 1,000 characters). A stream's
// first chunk is therefore short: its first sentence, or FirstChunkChars
// characters cut at a word boundary, whichever ends first. Later chunks
// grow while the text released before them plays out, and are checked
// only when waiting one more piece of the model's would leave the playout
// with less than a check's round trip still to play (the run's longest
// check so far, plus chunkSlack): the client never waits for the
// guardrail after its first token, and an answer costs about as many calls
// as it has text units. The model's stream is read on while a chunk is
// checked, and a chunk may be checked while the one before it is still
// out (at most two at a time, verdicts applied in order: stream.go), so
// that a check never waits for the one before it to return; the playout a
// chunk must fit in then ends where the chunks out will have played.
// A chunk is checked at a word boundary once it
// nears ChunkChars (room for one more word, chunkWordRoom), and cut
// inside a word only when it has no boundary at all by ChunkChars.
//
// While the answer is not paced (a model faster than a reader, or pacing
// turned off) there is no playout to hide a larger chunk's wait behind:
// later chunks are sentences, as every chunk was before issue 15.
//
// A chunk that fails the guardrail is a rejected text like a sentence was:
// the stream stops, and the rewrite loop, the fallback and the escalation
// follow exactly as before.

// DefaultFirstChunkChars is the default of Config.FirstChunkChars: 40
// characters are about 7 words of English, 140 ms of a model at 50
// tokens/s, so that with a guardrail round trip of 150 ms the first token
// goes out about 300 ms after the model's first; a clause is still enough
// for a content filter to judge. A shorter first chunk would gain 20 ms a
// word but shrink the playout buffer every later chunk must fit in, and
// cost calls.
const DefaultFirstChunkChars = 40

// DefaultChunkChars is the default of Config.ChunkChars: one Bedrock
// guardrail text unit.
const DefaultChunkChars = 1000

// chunkSlack is how much earlier than its round trip needs a later chunk
// is checked: the scheduling noise of a loaded server.
const chunkSlack = 10 * time.Millisecond

// chunkWordRoom is how far below ChunkChars a chunk is checked at a word
// boundary, so that the word after it does not take it over a text unit.
const chunkWordRoom = 64

// scanner finds where chunks end in the model's text. Its state is that
// of the held text: has is set once it holds more than spaces; term when
// it ends with a sentence's end mark (and maybe closing quotes or
// brackets); cjk when that mark needs no space after it; word when it
// ends inside a word.
type scanner struct {
	has, term, cjk, word bool
}

// cutRule says where the chunk being held may end.
type cutRule struct {
	// first: no chunk of this stream was checked yet.
	first bool
	// firstChars is the first chunk's length at a word boundary.
	firstChars int
	// soft is the length from which a later chunk ends at the next word
	// boundary; hard the length from which it ends at the end of the
	// piece that reaches it, boundary or not.
	soft, hard int
	// sentences: a later chunk ends at a sentence's end.
	sentences bool
	// now: a later chunk ends at its first boundary (the playout needs it).
	now bool
}

// cut returns where in piece the chunk held so far (held bytes) ends, or
// -1 when it does not end in piece. A sentence ends before the first
// space that follows its end mark (. ! ? …, then any closing quotes or
// brackets), so that "3.14" and "Hello." + "World" stay whole; right after
// a CJK end mark; and after a line break, so that list items and code
// lines stay whole. A word ends before a space. Spaces after a chunk start
// the next one, and a chunk needs more than spaces. When it returns -1,
// the scanner's state is that of the held text with piece added.
func (s *scanner) cut(piece string, held int, rule cutRule) int {
	has, term, cjk, word := s.has, s.term, s.cjk, s.word
	for i := 0; i < len(piece); {
		r, size := rune(piece[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(piece[i:])
		}
		n := held + i // the chunk's length if it ended here
		sentence := term && (isSpace(r) || cjk && !isCloser(r))
		if sentence && (rule.first || rule.now || rule.sentences) {
			return i
		}
		if word && isSpace(r) && rule.wordEnds(n) {
			return i
		}
		switch {
		case r == '\n' && has:
			if rule.first || rule.now || rule.sentences || rule.wordEnds(n+size) {
				return i + size
			}
			term, cjk, word = false, false, false
		case r == '.' || r == '!' || r == '?' || r == '…':
			has, term, cjk, word = true, true, false, true
		case r == '。' || r == '！' || r == '？':
			has, term, cjk, word = true, true, true, false
		case term && isCloser(r):
		case isSpace(r):
			term, cjk, word = false, false, false
		default:
			has, term, cjk, word = true, false, false, true
		}
		i += size
	}
	if has && rule.hard > 0 && held+len(piece) >= rule.hard {
		return len(piece) // no boundary in a whole text unit: cut anyway
	}
	s.has, s.term, s.cjk, s.word = has, term, cjk, word
	return -1
}

// wordEnds reports whether a chunk of n bytes ends at a word boundary.
func (r cutRule) wordEnds(n int) bool {
	if r.first {
		return n >= r.firstChars
	}
	return r.now || r.soft > 0 && n >= r.soft
}

// reset forgets the held text's state.
func (s *scanner) reset() { *s = scanner{} }

// chunking is the chunk sizes of a Config.
type chunking struct {
	firstChars, maxChars int
}

// rule returns where the held chunk may end: the stream has handed
// checked chunks to the guardrail, the playout's schedule is s, the
// chunks still out will have played out at ahead (zero: none is out),
// and the run's longest check took took. now is the arrival of the piece
// to cut.
func (c chunking) rule(checked int, s *schedule, ahead time.Time, took time.Duration, now time.Time) cutRule {
	soft := max(c.maxChars-chunkWordRoom, c.maxChars*3/4)
	rule := cutRule{first: checked == 0, firstChars: c.firstChars, soft: soft, hard: c.maxChars}
	if rule.first {
		return rule
	}
	if !s.on {
		rule.sentences = true
		return rule
	}
	// The held chunk's first token is due about a model's gap after the
	// last released one (at s.last), and the model's next piece comes
	// about a gap after this one: checked once that piece has come, the
	// chunk would pass too late unless a whole check fits before s.last.
	// A chunk out to the guardrail plays after the released text: the
	// held one follows it (stream.go checks chunks while others are out).
	end := s.last
	if ahead.After(end) {
		end = ahead
	}
	rule.now = !now.Add(took + chunkSlack).Before(end)
	return rule
}

func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\r', '\v', '\f':
		return true
	}
	return r >= utf8.RuneSelf && unicode.IsSpace(r)
}

func isCloser(r rune) bool {
	switch r {
	case '"', '\'', ')', ']', '}', '*', '_', '”', '’', '»', '」', '』', '）':
		return true
	}
	return false
}
