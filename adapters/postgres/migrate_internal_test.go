package postgres

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEmbeddedMigrationsAreNumbered(t *testing.T) {
	ms, err := loadMigrations(migrationFiles)
	require.NoError(t, err)
	for i, m := range ms {
		assert.Equal(t, i+1, m.version)
		assert.NotEmpty(t, m.sql)
	}
}

func TestLoadMigrations(t *testing.T) {
	file := func(names ...string) fstest.MapFS {
		fsys := fstest.MapFS{}
		for _, n := range names {
			fsys["migrations/"+n] = &fstest.MapFile{Data: []byte("SELECT 1;")}
		}
		return fsys
	}
	tests := []struct {
		name  string
		fsys  fstest.MapFS
		want  []string // names, in order
		fails string
	}{
		{name: "in order", fsys: file("0002_b.sql", "0001_a.sql"), want: []string{"a", "b"}},
		{name: "other files ignored", fsys: file("0001_a.sql", "README.md"), want: []string{"a"}},
		{name: "none", fsys: file(), fails: "no migrations"},
		{name: "a gap", fsys: file("0001_a.sql", "0003_c.sql"), fails: "version 3, want 2"},
		{name: "twice the same version", fsys: file("0001_a.sql", "0001_b.sql"), fails: "version 1, want 2"},
		{name: "not from 1", fsys: file("0002_b.sql"), fails: "version 2, want 1"},
		{name: "no name", fsys: file("0001.sql"), fails: "NNNN_name.sql"},
		{name: "short number", fsys: file("1_a.sql"), fails: "NNNN_name.sql"},
		{name: "not a number", fsys: file("000a_a.sql"), fails: "NNNN_name.sql"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := loadMigrations(tt.fsys)
			if tt.fails != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.fails)
				return
			}
			require.NoError(t, err)
			var names []string
			for _, m := range ms {
				names = append(names, m.name)
			}
			assert.Equal(t, tt.want, names)
		})
	}
}
