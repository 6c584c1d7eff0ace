package conversation

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// chunks feeds pieces to a scanner under rule (first for the first chunk
// only, then later) and returns the chunks it cuts, the held rest last.
func chunks(pieces []string, first, later cutRule) []string {
	var s scanner
	var out []string
	var held strings.Builder
	rule := first
	for _, piece := range pieces {
		for piece != "" {
			k := s.cut(piece, held.Len(), rule)
			if k < 0 {
				held.WriteString(piece)
				break
			}
			held.WriteString(piece[:k])
			out = append(out, held.String())
			held.Reset()
			s.reset()
			rule = later
			piece = piece[k:]
		}
	}
	if held.Len() > 0 {
		out = append(out, held.String()+"|") // held, not cut
	}
	return out
}

func TestScannerCuts(t *testing.T) {
	words := func(n int) []string { // " w01 w02 ...": 4 bytes a word
		out := make([]string, n)
		for i := range out {
			out[i] = " w" + string(rune('0'+(i+1)/10)) + string(rune('0'+(i+1)%10))
		}
		out[0] = strings.TrimPrefix(out[0], " ")
		return out
	}
	first := cutRule{first: true, firstChars: 12, soft: 40, hard: 60}
	sentences := cutRule{soft: 40, hard: 60, sentences: true}
	paced := cutRule{soft: 40, hard: 60}
	now := cutRule{soft: 40, hard: 60, now: true}
	tests := []struct {
		name         string
		pieces       []string
		first, later cutRule
		want         []string
	}{
		{"the first sentence ends the first chunk", []string{"Hi", " there.", " More", " words", " here."}, first, sentences,
			[]string{"Hi there.", " More words here.|"}},
		{"the first chunk ends at the first word boundary past its length", words(6), first, paced,
			[]string{"w01 w02 w03 w04", " w05 w06|"}},
		{"the first chunk's length counts whole words", []string{"Supercalifragilistic", " is", " long."}, first, paced,
			[]string{"Supercalifragilistic", " is long.|"}},
		{"a word boundary inside a piece", []string{"w01 w02 w03 w04 w05"}, first, paced,
			[]string{"w01 w02 w03 w04", " w05|"}},
		{"a piece that ends a word does not end the chunk: the next may go on with it", []string{"w01 w02 w0", "3x", " w04"}, first, paced,
			[]string{"w01 w02 w03x", " w04|"}},
		{"a decimal point ends no sentence", []string{"3.14", " is"}, cutRule{first: true, firstChars: 100, soft: 200, hard: 300}, paced,
			[]string{"3.14 is|"}},
		{"closing quotes stay with their sentence", []string{`He said "hi."`, " Then"}, cutRule{first: true, firstChars: 100, soft: 200, hard: 300}, paced,
			[]string{`He said "hi."`, " Then|"}},
		{"CJK end marks need no space", []string{"你好。再见。"}, first, sentences, []string{"你好。", "再见。|"}},
		{"CJK text with no boundary is cut at the hard length", []string{strings.Repeat("字", 15), strings.Repeat("字", 10)}, first, paced,
			[]string{strings.Repeat("字", 25)}},
		{"a line break ends the first chunk", []string{"- one\n", "- two"}, first, sentences, []string{"- one\n", "- two|"}},
		{"spaces alone are never a chunk", []string{"  ", "\n", " Hi"}, first, paced, []string{"  \n Hi|"}},
		{"later chunks of an unpaced answer are sentences", []string{"One.", " Two.", " Three", " four."}, first, sentences,
			[]string{"One.", " Two.", " Three four.|"}},
		{"later chunks of a paced answer grow past sentences", []string{"One.", " Two.", " Three", " four."}, first, paced,
			[]string{"One.", " Two. Three four.|"}},
		{"a later chunk ends at a word boundary near its soft length", append([]string{"One.", " w01"}, words(12)[1:]...), first, paced,
			[]string{"One.", " w01 w02 w03 w04 w05 w06 w07 w08 w09 w10", " w11 w12|"}},
		{"a later chunk with no boundary ends at its hard length", []string{"One.", " " + strings.Repeat("x", 58), "yy", "zz"}, first, paced,
			[]string{"One.", " " + strings.Repeat("x", 58) + "yy", "zz|"}},
		{"a playout about to run dry ends a later chunk at the next word", []string{"One.", " Two", "s", " three"}, first, now,
			[]string{"One.", " Twos", " three|"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := chunks(tt.pieces, tt.first, tt.later)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, strings.Join(tt.pieces, ""), strings.TrimSuffix(strings.Join(got, ""), "|"), "nothing lost or added")
		})
	}
}

func TestChunkingRule(t *testing.T) {
	const ms = time.Millisecond
	c := chunking{firstChars: 40, maxChars: 1000}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		checked int
		sched   schedule
		took    time.Duration
		now     time.Duration // after base
		ahead   time.Duration // after base; zero: no chunk out
		want    cutRule
	}{
		{name: "the first chunk", checked: 0, want: cutRule{first: true, firstChars: 40, soft: 936, hard: 1000}},
		{name: "unpaced: sentences", checked: 1, want: cutRule{firstChars: 40, soft: 936, hard: 1000, sentences: true}},
		{
			name: "paced, a check fits in what is left to play: grow", checked: 1, took: 150 * ms, now: 0,
			sched: schedule{on: true, last: base.Add(200 * ms)},
			want:  cutRule{firstChars: 40, soft: 936, hard: 1000},
		},
		{
			name: "paced, a check and the slack no longer fit: check at the next word", checked: 2, took: 150 * ms, now: 41 * ms,
			sched: schedule{on: true, last: base.Add(200 * ms)},
			want:  cutRule{firstChars: 40, soft: 936, hard: 1000, now: true},
		},
		{
			name: "paced, a chunk out plays after the released text: grow", checked: 2, took: 150 * ms, now: 100 * ms, ahead: 400 * ms,
			sched: schedule{on: true, last: base.Add(200 * ms)},
			want:  cutRule{firstChars: 40, soft: 936, hard: 1000},
		},
		{
			name: "paced, a chunk out, a check no longer fits before it plays out", checked: 2, took: 150 * ms, now: 241 * ms, ahead: 400 * ms,
			sched: schedule{on: true, last: base.Add(200 * ms)},
			want:  cutRule{firstChars: 40, soft: 936, hard: 1000, now: true},
		},
		{
			name: "paced, the playout already ran dry", checked: 2, took: 0, now: 300 * ms,
			sched: schedule{on: true, last: base.Add(200 * ms)},
			want:  cutRule{firstChars: 40, soft: 936, hard: 1000, now: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ahead time.Time
			if tt.ahead > 0 {
				ahead = base.Add(tt.ahead)
			}
			assert.Equal(t, tt.want, c.rule(tt.checked, &tt.sched, ahead, tt.took, base.Add(tt.now)))
		})
	}
	assert.Equal(t, 75, chunking{firstChars: 10, maxChars: 100}.rule(1, &schedule{}, time.Time{}, 0, base).soft, "a small text unit keeps a quarter for the last word")
}
