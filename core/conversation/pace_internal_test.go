package conversation

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestEven(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name   string
		pace   time.Duration // from an earlier sentence; zero: none yet
		before time.Duration // from the previous sentence's last piece; zero: none
		gaps   []time.Duration
		next   time.Duration // from the last piece to the release
		on     bool          // the answer is paced already
		want   []time.Duration
	}{
		{
			name: "steady pieces stay",
			gaps: []time.Duration{20 * ms, 20 * ms, 20 * ms, 20 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 20 * ms},
		},
		{
			name: "a piece that came late goes back to its place",
			gaps: []time.Duration{20 * ms, 20 * ms, 27 * ms, 13 * ms, 20 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms},
		},
		{
			name: "later than the gap after allows: moved as far as the pace allows",
			gaps: []time.Duration{20 * ms, 20 * ms, 20 * ms, 45 * ms, 2 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 27 * ms, 20 * ms},
		},
		{
			name: "the last piece, against the release",
			gaps: []time.Duration{20 * ms, 20 * ms, 20 * ms, 26 * ms}, next: 14 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 20 * ms},
		},
		{
			name:   "the first piece, against the previous sentence",
			before: 29 * ms,
			gaps:   []time.Duration{11 * ms, 20 * ms, 20 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 20 * ms},
		},
		{
			name: "a stall keeps its place",
			gaps: []time.Duration{20 * ms, 20 * ms, 300 * ms, 20 * ms, 20 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 300 * ms, 20 * ms, 20 * ms},
		},
		{
			name: "a stall then a quick piece: shortened to the pace after it",
			gaps: []time.Duration{20 * ms, 20 * ms, 20 * ms, 300 * ms, 5 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 285 * ms, 20 * ms},
		},
		{
			name: "a burst after a late delivery is spread at the pace",
			gaps: []time.Duration{20 * ms, 20 * ms, 20 * ms, 60 * ms, 0, 0, 20 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms},
		},
		{
			name: "a burst caught up by the release",
			gaps: []time.Duration{20 * ms, 20 * ms, 20 * ms, 50 * ms, 0}, next: 10 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms},
		},
		{
			name: "a stall then a burst keeps the stall, less the burst's gaps",
			gaps: []time.Duration{20 * ms, 20 * ms, 20 * ms, 300 * ms, 0, 0, 20 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 260 * ms, 20 * ms, 20 * ms, 20 * ms},
		},
		{
			name: "a pause too short for the burst after it: spread over both",
			gaps: []time.Duration{20 * ms, 20 * ms, 20 * ms, 30 * ms, 0, 0, 20 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 10 * ms, 10 * ms, 10 * ms, 20 * ms},
		},
		{
			name: "a slow guardrail: the release says nothing of the next piece",
			gaps: []time.Duration{20 * ms, 20 * ms, 20 * ms, 27 * ms}, next: 400 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 27 * ms},
		},
		{
			name: "too few gaps to tell the pace, none known: nothing moves",
			gaps: []time.Duration{27 * ms, 13 * ms}, next: 20 * ms,
			want: []time.Duration{27 * ms, 13 * ms},
		},
		{
			name: "too few gaps: the earlier sentence's pace",
			pace: 20 * ms,
			gaps: []time.Duration{27 * ms, 13 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms},
		},
		{
			// The stream was not read while a check ran (chunk.go): the
			// pieces of that time came at once after it. Their zero gaps
			// are not the model's pace, which the others still tell.
			name: "a chunk held back by a check, the burst after it spread at the pace",
			on:   true, pace: 20 * ms, before: 20 * ms,
			gaps: []time.Duration{150 * ms, 0, 0, 0, 0, 0, 0, 10 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms}, next: 20 * ms,
			want: []time.Duration{20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms, 20 * ms},
		},
		{
			name: "a model without delay",
			gaps: []time.Duration{0, 0, 0, 0, 3 * ms, 0}, next: 0,
			want: []time.Duration{0, 0, 0, 0, 3 * ms, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := schedule{pace: tt.pace, on: tt.on}
			at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
			if tt.before > 0 {
				s.prevAt = at
				at = at.Add(tt.before)
			}
			pieces := []held{{at: at}}
			for _, g := range tt.gaps {
				at = at.Add(g)
				pieces = append(pieces, held{at: at})
			}
			prevAt := s.prevAt
			s.even(pieces, at.Add(tt.next))

			var got []time.Duration
			if tt.before > 0 {
				got = append(got, pieces[0].at.Sub(prevAt))
			}
			for i := 1; i < len(pieces); i++ {
				got = append(got, pieces[i].at.Sub(pieces[i-1].at))
			}
			assert.Equal(t, tt.want, got)
			assert.Equal(t, pieces[len(pieces)-1].at, s.prevAt, "the last piece, evened, is the next sentence's previous")
		})
	}
}

// FuzzEven holds even to what the pacer relies on, whatever the
// arrivals: no piece moves later than it came, none before the previous
// sentence's last, and the order stays.
func FuzzEven(f *testing.F) {
	f.Add([]byte{20, 20, 27, 13, 20, 20}, uint8(20), uint8(0), true)
	f.Add([]byte{20, 20, 20, 60, 0, 0, 20}, uint8(0), uint8(20), false)
	f.Add([]byte{0, 0, 0, 3, 0}, uint8(0), uint8(0), true)
	f.Add([]byte{255, 1, 2, 250, 0, 0, 0, 9}, uint8(7), uint8(1), true)
	f.Fuzz(func(t *testing.T, gaps []byte, pace, next uint8, prev bool) {
		if len(gaps) > 64 {
			return
		}
		s := schedule{pace: time.Duration(pace) * time.Millisecond}
		at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
		if prev {
			s.prevAt = at
			at = at.Add(time.Millisecond)
		}
		pieces := []held{{at: at}}
		for _, g := range gaps {
			at = at.Add(time.Duration(g) * time.Millisecond)
			pieces = append(pieces, held{at: at})
		}
		came := make([]time.Time, len(pieces))
		for i, p := range pieces {
			came[i] = p.at
		}
		prevAt := s.prevAt
		s.even(pieces, at.Add(time.Duration(next)*time.Millisecond))

		for i, p := range pieces {
			if p.at.After(came[i]) {
				t.Fatalf("piece %d moved later: %v after %v", i, p.at, came[i])
			}
			if !prevAt.IsZero() && p.at.Before(prevAt) {
				t.Fatalf("piece %d moved before the previous sentence's last", i)
			}
			if i > 0 && p.at.Before(pieces[i-1].at) {
				t.Fatalf("piece %d moved before piece %d", i, i-1)
			}
		}
		if !s.prevAt.Equal(pieces[len(pieces)-1].at) {
			t.Fatalf("prevAt %v is not the last piece's %v", s.prevAt, pieces[len(pieces)-1].at)
		}
	})
}
