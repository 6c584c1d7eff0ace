package config

import (
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBoolForms(t *testing.T) {
	tests := []struct {
		value string
		want  bool
	}{
		{"1", true}, {"true", true}, {"TRUE", true}, {"True", true}, {"yes", true}, {"Yes", true},
		{"on", true}, {"ON", true}, {" 1 ", true},
		{"0", false}, {"false", false}, {"False", false}, {"no", false}, {"NO", false},
		{"off", false}, {"Off", false},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			cfg, err := loadEnv(t, dev(map[string]string{"AUTH_DISABLED": tt.value, "TEST_PAGE_ENABLED": tt.value}))
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.Auth.Disabled)
			assert.Equal(t, tt.want, cfg.HTTP.TestPageEnabled)
		})
	}
	for _, bad := range []string{"maybe", "2", "y", "n", "t", "enable", "1.0"} {
		t.Run(bad, func(t *testing.T) {
			_, err := loadEnv(t, dev(map[string]string{"AUTH_DISABLED": bad}))
			require.EqualError(t, err, `config: AUTH_DISABLED: must be a boolean, got "`+bad+`" (use 1/0, true/false, yes/no or on/off)`)
		})
	}
}

func TestDurationForms(t *testing.T) {
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"25s", 25 * time.Second},
		{"1m30s", 90 * time.Second},
		{"20ms", 20 * time.Millisecond},
		{"25", 25 * time.Second},
		{"0.5", 500 * time.Millisecond},
		{".5", 500 * time.Millisecond},
		{"5.", 5 * time.Second},
		{"0.02", 20 * time.Millisecond},
		{" 3 ", 3 * time.Second},
		{"0", 0},
		{"0s", 0},
		{"10", 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			cfg, err := loadEnv(t, dev(map[string]string{"SHUTDOWN_GRACE": tt.value}))
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.HTTP.ShutdownGrace)
		})
	}
	for _, bad := range []string{"1.2.3", "5 s", "1e3", "0x10", "-", ".", "inf", "+5"} {
		t.Run(bad, func(t *testing.T) {
			_, err := loadEnv(t, map[string]string{"SHUTDOWN_GRACE": bad})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "config: SHUTDOWN_GRACE: must be a duration")
		})
	}
}

func TestPrecedence(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		file string
		want bool // Debug
	}{
		{"default", nil, "", false},
		{"file DJANGO_DEBUG", nil, "DJANGO_DEBUG=0\n", false},
		{"file DEBUG", nil, "DEBUG=0\n", false},
		{"env DJANGO_DEBUG", map[string]string{"DJANGO_DEBUG": "0"}, "", false},
		{"env DEBUG", map[string]string{"DEBUG": "0"}, "", false},
		{"env DJANGO_DEBUG beats file DJANGO_DEBUG", map[string]string{"DJANGO_DEBUG": "1"}, "DJANGO_DEBUG=0\n", true},
		{"env DEBUG beats file DEBUG", map[string]string{"DEBUG": "1"}, "DEBUG=0\n", true},
		{"env DEBUG beats file DJANGO_DEBUG", map[string]string{"DEBUG": "1"}, "DJANGO_DEBUG=0\n", true},
		{"env DJANGO_DEBUG beats file DEBUG", map[string]string{"DJANGO_DEBUG": "1"}, "DEBUG=0\n", true},
		{"DJANGO_DEBUG beats DEBUG in env", map[string]string{"DJANGO_DEBUG": "0", "DEBUG": "1"}, "", false},
		{"DJANGO_DEBUG beats DEBUG in file", nil, "DEBUG=1\nDJANGO_DEBUG=0\n", false},
		{"empty env falls back to file", map[string]string{"DJANGO_DEBUG": ""}, "DJANGO_DEBUG=0\n", false},
		{"empty file value falls back to default", nil, "DJANGO_DEBUG=\n", false},
		{"file DJANGO_DEBUG on", nil, "DJANGO_DEBUG=1\n", true},
		{"env DJANGO_DEBUG on", map[string]string{"DJANGO_DEBUG": "on"}, "", true},
		{"lowercase key in file", nil, "django_debug=0\n", false},
		{"export and quotes in file", nil, "export DJANGO_DEBUG=\"off\"\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("DJANGO_SECRET_KEY", goodSecret) // so that DEBUG off loads
			t.Setenv("AUTH_API_KEY", "key")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := filepath.Join(t.TempDir(), "missing.env")
			if tt.file != "" {
				path = writeDotenv(t, tt.file)
			}
			cfg, err := Load(path)
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.Debug)
		})
	}
}

func TestAliasesByName(t *testing.T) {
	t.Run("secret key", func(t *testing.T) {
		path := writeDotenv(t, "DJANGO_SECRET_KEY=from-file-"+goodSecret+"\nSECRET_KEY=alias-file-"+goodSecret+"\n")
		clearEnv(t)
		t.Setenv("AUTH_API_KEY", "key")
		cfg, err := Load(path)
		require.NoError(t, err)
		assert.Equal(t, "from-file-"+goodSecret, cfg.Auth.SecretKey)
		assert.Equal(t, cfg.Auth.SecretKey, cfg.Auth.CSRFSecretKey)

		t.Setenv("SECRET_KEY", "alias-env-"+goodSecret)
		cfg, err = Load(path)
		require.NoError(t, err)
		assert.Equal(t, "alias-env-"+goodSecret, cfg.Auth.SecretKey)

		t.Setenv("DJANGO_SECRET_KEY", "env-"+goodSecret)
		cfg, err = Load(path)
		require.NoError(t, err)
		assert.Equal(t, "env-"+goodSecret, cfg.Auth.SecretKey)
	})
	t.Run("allowed hosts", func(t *testing.T) {
		path := writeDotenv(t, "DJANGO_ALLOWED_HOSTS=file.com\n")
		clearEnvDev(t)
		t.Setenv("ALLOWED_HOSTS", "alias.com")
		cfg, err := Load(path)
		require.NoError(t, err)
		assert.Equal(t, []string{"alias.com"}, cfg.HTTP.Hosts.Allowed)

		t.Setenv("DJANGO_ALLOWED_HOSTS", "env.com")
		cfg, err = Load(path)
		require.NoError(t, err)
		assert.Equal(t, []string{"env.com"}, cfg.HTTP.Hosts.Allowed)
	})
	t.Run("error names the alias used", func(t *testing.T) {
		_, err := loadEnv(t, map[string]string{"DEBUG": "sure"})
		require.Error(t, err)
		assert.True(t, strings.HasPrefix(err.Error(), "config: DEBUG: "), err.Error())
	})
}

func TestDotenvFile(t *testing.T) {
	t.Run("empty path and missing file are fine", func(t *testing.T) {
		clearEnvDev(t)
		_, err := Load("")
		require.NoError(t, err)
		_, err = Load(filepath.Join(t.TempDir(), "nope", ".env"))
		require.NoError(t, err)
	})
	t.Run("values are read", func(t *testing.T) {
		clearEnvDev(t)
		path := writeDotenv(t, `# comment
LISTEN_ADDR = ":8100"
PSQL_BOT_PASSWORD='pa$$word "quoted" # not a comment'
PSQL_HOST=db.internal  # trailing comment
PSQL_BOT_USERNAME=bot
PSQL_STATE_DATABASE=state
`)
		cfg, err := Load(path)
		require.NoError(t, err)
		assert.Equal(t, ":8100", cfg.HTTP.ListenAddr)
		u, err := url.Parse(cfg.Store.DatabaseURL)
		require.NoError(t, err)
		pw, _ := u.User.Password()
		assert.Equal(t, `pa$$word "quoted" # not a comment`, pw)
		assert.Equal(t, "db.internal:5432", u.Host)
	})
	t.Run("malformed line is reported by number without its content", func(t *testing.T) {
		clearEnv(t)
		path := writeDotenv(t, "DJANGO_DEBUG=1\n\nthis line holds Sup3rS3cret\n")
		_, err := Load(path)
		require.Error(t, err)
		assert.Equal(t, "config: "+path+":3: malformed dotenv line (want NAME=value)", err.Error())
	})
	t.Run("unclosed quote", func(t *testing.T) {
		clearEnv(t)
		path := writeDotenv(t, "DJANGO_SECRET_KEY=\"Sup3rS3cret\nDJANGO_DEBUG=1\n")
		_, err := Load(path)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "config: "+path+": malformed dotenv file")
		assert.NotContains(t, err.Error(), "Sup3rS3cret")
	})
	t.Run("unreadable file", func(t *testing.T) {
		clearEnv(t)
		dir := t.TempDir() // a directory cannot be read as a file
		_, err := Load(dir)
		require.Error(t, err)
		assert.True(t, strings.HasPrefix(err.Error(), "config: read "+dir), err.Error())
	})
	t.Run("file values are validated too", func(t *testing.T) {
		clearEnvDev(t)
		path := writeDotenv(t, "MAX_FRAME_BYTES=10\n")
		_, err := Load(path)
		require.EqualError(t, err, "config: MAX_FRAME_BYTES: must be between 1024 and 16777216, got 10")
	})
	t.Run("oversized file value", func(t *testing.T) {
		clearEnvDev(t)
		path := writeDotenv(t, "AUTH_API_KEY="+strings.Repeat("k", maxValueBytes+1)+"\n")
		_, err := Load(path)
		require.EqualError(t, err, "config: AUTH_API_KEY: value is 4097 bytes, over the 4096-byte limit")
	})
}

func TestDatabaseURL(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		want     string
		user, pw string
		db       string
	}{
		{
			name: "none",
			env:  nil,
			want: "",
		},
		{
			name: "assembled with escaping",
			env: map[string]string{
				"PSQL_HOST": "db.internal", "PSQL_PORT": "6432", "PSQL_BOT_USERNAME": "bot@corp",
				"PSQL_BOT_PASSWORD": "p@ss:w/rd%?#&= x", "PSQL_STATE_DATABASE": "state db?#",
			},
			want: "postgres://bot%40corp:p%40ss%3Aw%2Frd%25%3F%23&=%20x@db.internal:6432/state%20db%3F%23",
			user: "bot@corp", pw: "p@ss:w/rd%?#&= x", db: "state db?#",
		},
		{
			name: "default port, no password",
			env:  map[string]string{"PSQL_HOST": "db", "PSQL_BOT_USERNAME": "bot", "PSQL_STATE_DATABASE": "state"},
			want: "postgres://bot@db:5432/state",
			user: "bot", db: "state",
		},
		{
			name: "IPv6 host",
			env:  map[string]string{"PSQL_HOST": "[::1]", "PSQL_BOT_USERNAME": "bot", "PSQL_STATE_DATABASE": "state"},
			want: "postgres://bot@[::1]:5432/state",
			user: "bot", db: "state",
		},
		{
			name: "DATABASE_URL wins",
			env: map[string]string{
				"DATABASE_URL": "postgresql://u:p@h:1/d?sslmode=require",
				"PSQL_HOST":    "db", "PSQL_BOT_USERNAME": "bot", "PSQL_STATE_DATABASE": "state",
			},
			want: "postgresql://u:p@h:1/d?sslmode=require",
			user: "u", pw: "p", db: "d",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadEnv(t, dev(tt.env))
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.Store.DatabaseURL)
			if tt.want == "" {
				return
			}
			u, err := url.Parse(cfg.Store.DatabaseURL)
			require.NoError(t, err)
			assert.Equal(t, tt.user, u.User.Username())
			pw, _ := u.User.Password()
			assert.Equal(t, tt.pw, pw)
			assert.Equal(t, tt.db, strings.TrimPrefix(u.Path, "/"))
		})
	}
	t.Run("PSQL parts without host warn", func(t *testing.T) {
		cfg, err := loadEnv(t, dev(map[string]string{"PSQL_BOT_USERNAME": "bot"}))
		require.NoError(t, err)
		assert.Empty(t, cfg.Store.DatabaseURL)
		assert.Contains(t, strings.Join(cfg.Warnings, "\n"), "PSQL_HOST is not")
	})
}

func TestQuoteShortens(t *testing.T) {
	assert.Equal(t, `"abc"`, quote("abc"))
	q := quote(strings.Repeat("x", 100))
	assert.Equal(t, `"`+strings.Repeat("x", 64)+`"...`, q)
}
