package redis

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSplitLogged(t *testing.T) {
	header := string([]byte{0x80, 1, 2, 3, 4, 5, 6, 7}) + "rest"
	for _, tc := range []struct {
		name, body string
		id         entryID
		msg        string
		ok         bool
		err        string
	}{
		{name: "with its log id", body: "\x0f1733250000000-7" + header, id: entryID{1733250000000, 7}, msg: header, ok: true},
		{name: "the version before the log", body: header, msg: header},
		{name: "empty", body: ""},
		{name: "id cut short", body: "\x0f1733-7", err: "log id length 15"},
		{name: "no id", body: "\x00" + header, err: "log id length 0"},
		{name: "id too long", body: "\x7f" + header, err: "log id length 127"},
		{name: "not a stream id", body: "\x031-x" + header, err: `stream id "1-x"`},
		{name: "no dash", body: "\x02" + "12" + header, err: `stream id "12"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, msg, ok, err := splitLogged(tc.body)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.id, id)
			assert.Equal(t, tc.msg, msg)
			assert.Equal(t, tc.ok, ok)
		})
	}
}

func TestEntryIDOrder(t *testing.T) {
	for _, tc := range []struct {
		a, b  entryID
		after bool
	}{
		{entryID{2, 0}, entryID{1, 9}, true},
		{entryID{1, 2}, entryID{1, 1}, true},
		{entryID{1, 1}, entryID{1, 1}, false},
		{entryID{1, 9}, entryID{2, 0}, false},
	} {
		assert.Equal(t, tc.after, tc.a.after(tc.b), "%v after %v", tc.a, tc.b)
	}
	id, err := parseEntryID(entryID{1733250000000, 42}.String())
	require.NoError(t, err)
	assert.Equal(t, entryID{1733250000000, 42}, id)
}
