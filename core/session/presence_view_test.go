package session

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/ports"
)

// step is one thing that happens to a view at a time after the start.
type step struct {
	at     time.Duration
	join   *ports.Member
	leave  string // a connection id
	abrupt bool
	flush  bool
	want   *PresenceDiff // for a flush: nil when nothing is told
}

func conn(id, key string) ports.Member {
	return ports.Member{ConnectionID: id, UserType: "user", PresenceKey: key}
}

func joinAt(at time.Duration, m ports.Member) step { return step{at: at, join: &m} }
func leaveAt(at time.Duration, id string, abrupt bool) step {
	return step{at: at, leave: id, abrupt: abrupt}
}
func flushAt(at time.Duration, want *PresenceDiff) step { return step{at: at, flush: true, want: want} }

func diff(count int, joins, leaves []ports.Member) *PresenceDiff {
	return &PresenceDiff{Joins: joins, Leaves: leaves, Count: count}
}

func ms(ids ...ports.Member) []ports.Member { return ids }

func TestPresenceViewRules(t *testing.T) {
	rules := PresenceRules{Interval: time.Second, Grace: 15 * time.Second, Max: 3}
	a, b, c, d := conn("a", ""), conn("b", ""), conn("c", ""), conn("d", "")
	tab1, tab2 := conn("t1", "ann"), conn("t2", "ann")
	cases := []struct {
		name  string
		start []ports.Member
		steps []step
	}{
		{"a join is told at the next flush", ms(a), []step{
			joinAt(100*time.Millisecond, b),
			flushAt(500*time.Millisecond, nil), // less than Interval after the state
			flushAt(time.Second, diff(2, ms(b), nil)),
			flushAt(3*time.Second, nil), // nothing new
		}},
		{"joins and leaves of one interval are batched and sorted", ms(a), []step{
			flushAt(time.Second, nil), // nothing has changed yet
			joinAt(1100*time.Millisecond, d),
			joinAt(1200*time.Millisecond, c),
			leaveAt(1300*time.Millisecond, "a", false),
			flushAt(2*time.Second, diff(2, ms(c, d), ms(a))),
		}},
		{"diffs are at least Interval apart", nil, []step{
			joinAt(time.Second, a),
			flushAt(time.Second, diff(1, ms(a), nil)),
			joinAt(1100*time.Millisecond, b),
			flushAt(1900*time.Millisecond, nil),
			flushAt(2*time.Second, diff(2, ms(b), nil)),
		}},
		{"a clean leave is told at once", ms(a, b), []step{
			leaveAt(time.Second, "b", false),
			flushAt(time.Second, diff(1, nil, ms(b))),
		}},
		{"an abrupt leave waits for the grace", ms(a, b), []step{
			leaveAt(time.Second, "b", true),
			flushAt(2*time.Second, nil),
			flushAt(15*time.Second, nil),
			flushAt(16*time.Second, diff(1, nil, ms(b))),
		}},
		{"a key back within the grace is never told", ms(a, tab1), []step{
			leaveAt(time.Second, "t1", true),
			joinAt(5*time.Second, tab2),
			flushAt(6*time.Second, nil),
			flushAt(30*time.Second, nil),
			leaveAt(31*time.Second, "t2", false),
			flushAt(31*time.Second, diff(1, nil, ms(tab1))), // as the listeners know it
		}},
		{"a key back after the grace leaves and joins", ms(tab1), []step{
			leaveAt(time.Second, "t1", true),
			flushAt(16*time.Second, diff(0, nil, ms(tab1))),
			joinAt(17*time.Second, tab2),
			flushAt(17*time.Second, diff(1, ms(tab2), nil)),
		}},
		{"a connection without a key comes back as another member", ms(a), []step{
			leaveAt(time.Second, "a", true),
			joinAt(2*time.Second, b),
			flushAt(2*time.Second, diff(2, ms(b), nil)),
			flushAt(16*time.Second, diff(1, nil, ms(a))),
		}},
		{"two tabs of one key are one member", nil, []step{
			joinAt(time.Second, tab1),
			joinAt(time.Second, tab2),
			flushAt(time.Second, diff(1, ms(tab1), nil)),
			leaveAt(2*time.Second, "t1", false),
			flushAt(3*time.Second, nil), // ann is still there on t2
			leaveAt(4*time.Second, "t2", false),
			flushAt(4*time.Second, diff(0, nil, ms(tab1))),
		}},
		{"a member that came and went between flushes is not told", ms(a), []step{
			joinAt(1100*time.Millisecond, b),
			leaveAt(1200*time.Millisecond, "b", false),
			flushAt(2*time.Second, nil),
		}},
		{"a leave and a rejoin of one key between flushes are not told", ms(tab1), []step{
			leaveAt(1100*time.Millisecond, "t1", false),
			joinAt(1200*time.Millisecond, tab2),
			flushAt(2*time.Second, nil),
		}},
		{"joins and leaves are idempotent", ms(a), []step{
			joinAt(time.Second, a),
			joinAt(time.Second, b),
			joinAt(time.Second, b),
			leaveAt(time.Second, "x", false),
			flushAt(time.Second, diff(2, ms(b), nil)),
			leaveAt(2*time.Second, "b", false),
			leaveAt(2*time.Second, "b", true),
			joinAt(2*time.Second, b), // a late echo of its join
			flushAt(2*time.Second, diff(1, nil, ms(b))),
		}},
		{"above Max the count only", ms(a, b, c), []step{
			joinAt(time.Second, d),
			flushAt(time.Second, &PresenceDiff{Count: 4, CountOnly: true}),
			joinAt(2*time.Second, conn("e", "")),
			flushAt(2*time.Second, &PresenceDiff{Count: 5, CountOnly: true}),
			joinAt(3*time.Second, conn("f", "")),
			leaveAt(3*time.Second, "f", false),
			flushAt(3*time.Second, nil), // the count did not change
			leaveAt(4*time.Second, "e", false),
			flushAt(4*time.Second, &PresenceDiff{Count: 4, CountOnly: true}),
			leaveAt(5*time.Second, "a", false),
			flushAt(5*time.Second, &PresenceDiff{Reset: true, Count: 3, Joins: ms(b, c, d)}),
			leaveAt(6*time.Second, "b", false),
			flushAt(6*time.Second, diff(2, nil, ms(b))),
		}},
		{"no grace when Grace is negative", ms(a), []step{
			leaveAt(time.Second, "a", true),
			flushAt(time.Second, diff(0, nil, ms(a))),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Unix(1000, 0)
			r := rules
			if tc.name == "no grace when Grace is negative" {
				r.Grace = -1
			}
			v := NewPresenceView(r, tc.start, start)
			for i, s := range tc.steps {
				now := start.Add(s.at)
				switch {
				case s.join != nil:
					v.Join(*s.join)
				case s.leave != "":
					v.Leave(s.leave, s.abrupt, now)
				case s.flush:
					got, ok := v.Flush(now)
					if s.want == nil {
						assert.False(t, ok, "step %d: told %+v", i, got)
						continue
					}
					require.True(t, ok, "step %d: nothing told", i)
					assert.Equal(t, *s.want, got, "step %d", i)
				}
			}
		})
	}
}

func TestPresenceViewState(t *testing.T) {
	start := time.Unix(1000, 0)
	a, b, c := conn("a", ""), conn("b", ""), conn("c", "")
	t.Run("a new listener gets what the others were told", func(t *testing.T) {
		v := NewPresenceView(PresenceRules{}, ms(b, a), start)
		members, count, countOnly := v.State()
		assert.Equal(t, ms(a, b), members)
		assert.Equal(t, 2, count)
		assert.False(t, countOnly)

		v.Join(c) // not flushed yet: the next diff tells it to everyone
		members, count, _ = v.State()
		assert.Equal(t, ms(a, b), members)
		assert.Equal(t, 2, count)
	})
	t.Run("above Max the count only", func(t *testing.T) {
		v := NewPresenceView(PresenceRules{Max: 2}, ms(a, b, c), start)
		members, count, countOnly := v.State()
		assert.Empty(t, members)
		assert.Equal(t, 3, count)
		assert.True(t, countOnly)
	})
}

func TestPresenceViewNext(t *testing.T) {
	start := time.Unix(1000, 0)
	v := NewPresenceView(PresenceRules{Interval: time.Second, Grace: 10 * time.Second}, ms(conn("a", ""), conn("b", "")), start)
	assert.True(t, v.Next().IsZero(), "nothing pending")

	v.Leave("a", true, start.Add(100*time.Millisecond))
	assert.Equal(t, start.Add(10100*time.Millisecond), v.Next(), "the end of the grace")

	v.Join(conn("c", ""))
	assert.Equal(t, start.Add(time.Second), v.Next(), "a join waits for the interval only")
	_, ok := v.Flush(v.Next())
	require.True(t, ok)
	assert.Equal(t, start.Add(10100*time.Millisecond), v.Next())

	v.Leave("b", true, start.Add(10*time.Second))
	_, ok = v.Flush(v.Next())
	require.True(t, ok)
	assert.Equal(t, start.Add(20*time.Second), v.Next(), "b's grace")
}

func TestPresenceViewSync(t *testing.T) {
	start := time.Unix(1000, 0)
	a, b, c := conn("a", ""), conn("b", ""), conn("c", "")
	cases := []struct {
		name     string
		during   func(v *PresenceView) // events applied while the list is read
		listed   []ports.Member
		wantNext *PresenceDiff // flushed after the grace
	}{
		{"a connection missing from the list leaves after the grace",
			nil, ms(a), diff(1, nil, ms(b))},
		{"a connection the events missed joins",
			nil, ms(a, b, c), diff(3, ms(c), nil)},
		{"a join seen while the list was read stays",
			func(v *PresenceView) { v.Join(c) }, ms(a, b), diff(3, ms(c), nil)},
		{"a leave seen while the list was read is not undone",
			func(v *PresenceView) { v.Leave("b", false, start) }, ms(a, b), diff(1, nil, ms(b))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := NewPresenceView(PresenceRules{Grace: 5 * time.Second}, ms(a, b), start)
			mark := v.Mark()
			if tc.during != nil {
				tc.during(v)
			}
			v.Sync(tc.listed, mark, start)
			got, ok := v.Flush(start.Add(6 * time.Second))
			require.True(t, ok)
			assert.Equal(t, *tc.wantNext, got)
		})
	}
}

// BenchmarkPresenceViewChurn measures one join, one leave and one flush
// on a session of 1,000 members: the work of a listened session per
// change.
func BenchmarkPresenceViewChurn(b *testing.B) {
	start := time.Unix(1000, 0)
	members := make([]ports.Member, 1000)
	for i := range members {
		members[i] = conn(fmt.Sprintf("c%04d", i), "")
	}
	v := NewPresenceView(PresenceRules{Interval: time.Millisecond}, members, start)
	now := start
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		now = now.Add(time.Millisecond)
		id := fmt.Sprintf("n%d", i)
		v.Join(conn(id, ""))
		v.Leave(members[i%1000].ConnectionID, false, now)
		members[i%1000] = conn(id, "")
		if _, ok := v.Flush(now); !ok {
			b.Fatal("nothing told")
		}
	}
}
