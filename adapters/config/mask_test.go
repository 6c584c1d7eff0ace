package config

import (
	"bytes"
	"log/slog"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLogValueMasksSecrets(t *testing.T) {
	secrets := map[string]string{
		"DJANGO_SECRET_KEY": "SecretKey-" + goodSecret,
		"CSRF_SECRET_KEY":   "CsrfKey-" + goodSecret,
		"AUTH_API_KEY":      "ApiKey-9f8e7d6c5b4a",
		"PSQL_BOT_PASSWORD": "Pg/Pass@word:1",
		"REDIS_URL":         "rediss://default:RedisPass123@cache:6379/0?password=QueryPass456",
		"OPENAI_API_KEY":    "sk-OpenAIKey-4242",
	}
	env := production(map[string]string{
		"PSQL_HOST": "db", "PSQL_BOT_USERNAME": "bot", "PSQL_STATE_DATABASE": "state",
		"BEDROCK_ENDPOINT_URL": "https://ep-user:EndpointPass789@bedrock.local",
		"OPENAI_BASE_URL":      "https://llm.internal/v1", "OPENAI_MODEL_ID_CHAT": "m",
	})
	for k, v := range secrets {
		env[k] = v
	}
	cfg, err := loadEnv(t, env)
	require.NoError(t, err)

	forbidden := []string{
		secrets["DJANGO_SECRET_KEY"], secrets["CSRF_SECRET_KEY"], secrets["AUTH_API_KEY"], goodSecret,
		secrets["PSQL_BOT_PASSWORD"], url.QueryEscape(secrets["PSQL_BOT_PASSWORD"]),
		url.PathEscape(secrets["PSQL_BOT_PASSWORD"]), "Pass%40word", "RedisPass123", "QueryPass456",
		"EndpointPass789", secrets["OPENAI_API_KEY"],
	}
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			var h slog.Handler = slog.NewJSONHandler(&buf, nil)
			if format == "text" {
				h = slog.NewTextHandler(&buf, nil)
			}
			slog.New(h).Info("config", "config", cfg)
			out := buf.String()
			for _, s := range forbidden {
				assert.NotContains(t, out, s)
			}
			for _, s := range []string{"xxxxx", "secret_key", "api_key", "db:5432", "cache:6379", "bedrock.local", "state"} {
				assert.Contains(t, out, s)
			}
		})
	}

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", cfg)
	out := buf.String()
	assert.Contains(t, out, `"secret_key":"set"`)
	assert.Contains(t, out, `"csrf_secret_key":"set"`)
	assert.Contains(t, out, `"api_key":"set"`)
	assert.Contains(t, out, `"database_url":"postgres://bot:xxxxx@db:5432/state"`)
	assert.Contains(t, out, `"openai":{"base_url":"https://llm.internal/v1","api_key":"set"`)

	devCfg, err := loadEnv(t, dev(nil))
	require.NoError(t, err)
	buf.Reset()
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", devCfg)
	out = buf.String()
	assert.Contains(t, out, `"secret_key":"placeholder"`)
	assert.Contains(t, out, `"csrf_secret_key":"same as secret_key"`)
	assert.Contains(t, out, `"api_key":"unset"`)
	assert.NotContains(t, out, DevSecretKey)
}
