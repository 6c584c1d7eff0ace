package session

import (
	"slices"
	"strings"
	"time"

	"github.com/wsserver/wsserver/ports"
)

// PresenceRules are the settings of presence events (PROTOCOL.md §4.7).
type PresenceRules struct {
	// Interval is the least time between two diffs to the listeners of a
	// session. Zero means 1 second.
	Interval time.Duration
	// Grace is how long a member whose last connection dropped without a
	// clean close stays present, waiting for its key to come back. Zero
	// means 15 seconds; a negative value means no grace.
	Grace time.Duration
	// Max is the most members whose joins and leaves are listed; above it
	// the listeners get the count only. Zero means 1000.
	Max int
}

// Defaults of PresenceRules, and of the settings that set them.
const (
	DefaultPresenceDiffInterval = time.Second
	DefaultPresenceLeaveGrace   = 15 * time.Second
	DefaultPresenceEventsMax    = 1000
)

func (r PresenceRules) withDefaults() PresenceRules {
	if r.Interval <= 0 {
		r.Interval = DefaultPresenceDiffInterval
	}
	if r.Grace == 0 {
		r.Grace = DefaultPresenceLeaveGrace
	}
	if r.Grace < 0 {
		r.Grace = 0
	}
	if r.Max <= 0 {
		r.Max = DefaultPresenceEventsMax
	}
	return r
}

// PresenceDiff is what the listeners of a session are told at a flush.
type PresenceDiff struct {
	// Reset says that the listeners get the whole state again (Joins holds
	// it) instead of a diff: the session came back under Max.
	Reset bool
	// Joins and Leaves are the members that appeared and went, sorted by
	// connection id; both empty when CountOnly.
	Joins, Leaves []ports.Member
	// Count is the number of members after the diff.
	Count int
	// CountOnly says that the session has more than Max members.
	CountOnly bool
}

// PresenceView is one session's members as its presence-event listeners
// on one instance see them. It is fed the joins and leaves of every
// connection of the session, on every instance, and tells the listeners
// about members, not connections: a member is a presence key (all the
// connections that gave it), or a connection that gave none.
//
// Its rules, all decided here and nowhere else:
//   - Diffs are batched: Flush yields at most one diff per Interval, and
//     it holds the net change since the last one, so a member that came
//     and went in between is not mentioned at all.
//   - A member whose last connection dropped abruptly stays present for
//     Grace; if a connection with its key joins meanwhile, its leave is
//     never told. A clean leave is told at the next flush.
//   - Above Max members the listeners get the count only, and the whole
//     state again when the session comes back to Max or below.
//
// Joins and leaves are idempotent (a connection joins once and leaves
// once, whatever the number of times it is told), so the events of a
// snapshot and of a live feed may overlap. A PresenceView is not safe for
// concurrent use; time is given, never read.
type PresenceView struct {
	rules   PresenceRules
	conns   map[string]viewConn    // connection id → its member and when it joined
	members map[string]*viewMember // member key → member
	graced  map[string]time.Time   // member key → when its grace ends
	gone    map[string]bool        // connections that left since the last Mark
	changed map[string]bool        // members that may differ from what was told
	told    map[string]ports.Member
	count   int  // the count the listeners were told
	summary bool // the listeners were told the count only
	last    time.Time
	seq     uint64
}

type viewConn struct {
	key string
	seq uint64
}

type viewMember struct {
	m     ports.Member // as it first joined: what the listeners were told
	conns int
}

// memberKey is the key of the member that m belongs to. The prefixes keep
// a presence key from ever naming a connection.
func memberKey(m ports.Member) string {
	if m.PresenceKey != "" {
		return "k" + m.PresenceKey
	}
	return "c" + m.ConnectionID
}

// NewPresenceView returns the view of a session whose members are those
// listed, as its listeners are told at now.
func NewPresenceView(rules PresenceRules, members []ports.Member, now time.Time) *PresenceView {
	v := &PresenceView{
		rules:   rules.withDefaults(),
		conns:   make(map[string]viewConn),
		members: make(map[string]*viewMember),
		graced:  make(map[string]time.Time),
		gone:    make(map[string]bool),
		changed: make(map[string]bool),
		last:    now,
	}
	for _, m := range members {
		v.Join(m)
	}
	v.changed = make(map[string]bool)
	v.tell()
	return v
}

// tell records the whole state as told.
func (v *PresenceView) tell() {
	v.count = len(v.members)
	v.summary = v.count > v.rules.Max
	v.told = nil
	if !v.summary {
		v.told = make(map[string]ports.Member, len(v.members))
		for k, mem := range v.members {
			v.told[k] = mem.m
		}
	}
}

// State is what a new listener is told first: what the others were told
// last, so that the next diff applies to it as to them. Members are
// sorted by connection id; none when countOnly.
func (v *PresenceView) State() (members []ports.Member, count int, countOnly bool) {
	members = make([]ports.Member, 0, len(v.told))
	for _, m := range v.told {
		members = append(members, m)
	}
	sortMembers(members)
	return members, v.count, v.summary
}

// Join records connection m. A member whose grace runs keeps its place.
func (v *PresenceView) Join(m ports.Member) {
	if _, ok := v.conns[m.ConnectionID]; ok || v.gone[m.ConnectionID] {
		return
	}
	v.seq++
	k := memberKey(m)
	v.conns[m.ConnectionID] = viewConn{key: k, seq: v.seq}
	mem := v.members[k]
	if mem == nil {
		v.members[k] = &viewMember{m: m, conns: 1}
		v.changed[k] = true
		return
	}
	mem.conns++
	delete(v.graced, k)
}

// Leave records that connection connID left at now; abrupt when it
// dropped without a clean close, and its member then waits for Grace.
func (v *PresenceView) Leave(connID string, abrupt bool, now time.Time) {
	c, ok := v.conns[connID]
	if !ok {
		return
	}
	v.seq++
	delete(v.conns, connID)
	v.gone[connID] = true
	mem := v.members[c.key]
	if mem.conns--; mem.conns > 0 {
		return
	}
	if abrupt && v.rules.Grace > 0 {
		v.graced[c.key] = now.Add(v.rules.Grace)
		return
	}
	delete(v.members, c.key)
	v.changed[c.key] = true
}

// Mark starts a resynchronisation: it returns a mark for Sync, taken
// before the full list is read.
func (v *PresenceView) Mark() uint64 {
	clear(v.gone)
	return v.seq
}

// Sync brings the view to members, a full list read after mark was
// taken: connections it lacks that joined before the mark left abruptly
// (their events were lost, or their instance died), and those it has that
// the view lacks and that did not leave since the mark join.
func (v *PresenceView) Sync(members []ports.Member, mark uint64, now time.Time) {
	listed := make(map[string]bool, len(members))
	for _, m := range members {
		listed[m.ConnectionID] = true
		v.Join(m)
	}
	for id, c := range v.conns {
		if !listed[id] && c.seq <= mark {
			v.Leave(id, true, now)
		}
	}
}

// Next is when Flush may next have something to tell; zero when nothing
// is pending.
func (v *PresenceView) Next() time.Time {
	earliest := v.last.Add(v.rules.Interval)
	var due time.Time
	if len(v.changed) > 0 {
		due = earliest
	}
	for _, end := range v.graced {
		at := end
		if at.Before(earliest) {
			at = earliest
		}
		if due.IsZero() || at.Before(due) {
			due = at
		}
	}
	return due
}

// Flush returns what the listeners are to be told at now, and false when
// there is nothing or the last diff is less than Interval old.
func (v *PresenceView) Flush(now time.Time) (PresenceDiff, bool) {
	if now.Before(v.last.Add(v.rules.Interval)) {
		return PresenceDiff{}, false
	}
	for k, end := range v.graced {
		if !now.Before(end) {
			delete(v.graced, k)
			delete(v.members, k)
			v.changed[k] = true
		}
	}
	if len(v.changed) == 0 {
		return PresenceDiff{}, false
	}
	count := len(v.members)
	var d PresenceDiff
	switch {
	case count > v.rules.Max:
		clear(v.changed)
		if v.summary && count == v.count {
			return PresenceDiff{}, false
		}
		v.tell()
		d = PresenceDiff{Count: count, CountOnly: true}
	case v.summary:
		clear(v.changed)
		v.tell()
		d = PresenceDiff{Reset: true, Count: count}
		d.Joins, _, _ = v.State()
	default:
		for k := range v.changed {
			mem, present := v.members[k]
			was, told := v.told[k]
			switch {
			case present && !told:
				d.Joins = append(d.Joins, mem.m)
				v.told[k] = mem.m
			case !present && told:
				d.Leaves = append(d.Leaves, was)
				delete(v.told, k)
			}
		}
		clear(v.changed)
		if len(d.Joins) == 0 && len(d.Leaves) == 0 {
			return PresenceDiff{}, false
		}
		sortMembers(d.Joins)
		sortMembers(d.Leaves)
		v.count = count
		d.Count = count
	}
	v.last = now
	return d, true
}

func sortMembers(ms []ports.Member) {
	slices.SortFunc(ms, func(a, b ports.Member) int { return strings.Compare(a.ConnectionID, b.ConnectionID) })
}
