package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestProductionChecks(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // error prefixes; none = valid
	}{
		{"valid", production(nil), nil},
		{"valid with auth disabled", production(map[string]string{"AUTH_API_KEY": "", "AUTH_DISABLED": "1"}), nil},
		{"valid via alias", production(map[string]string{"DJANGO_SECRET_KEY": "", "SECRET_KEY": goodSecret, "DJANGO_DEBUG": "", "DEBUG": "off"}), nil},
		{"missing secret", production(map[string]string{"DJANGO_SECRET_KEY": ""}), []string{
			"config: DJANGO_SECRET_KEY: required when DJANGO_DEBUG is off", "config: DJANGO_DEBUG is off (the default), so the server does not start without DJANGO_SECRET_KEY;",
		}},
		{"dev default", production(map[string]string{"DJANGO_SECRET_KEY": DevSecretKey}), []string{"config: DJANGO_SECRET_KEY: is the development placeholder"}},
		{"django-insecure", production(map[string]string{"DJANGO_SECRET_KEY": "django-insecure-" + goodSecret}), []string{"config: DJANGO_SECRET_KEY: is the development placeholder"}},
		{"change-me", production(map[string]string{"DJANGO_SECRET_KEY": goodSecret + "-Change-Me"}), []string{"config: DJANGO_SECRET_KEY: looks like a placeholder"}},
		{"changeme", production(map[string]string{"DJANGO_SECRET_KEY": "changeme" + goodSecret}), []string{"config: DJANGO_SECRET_KEY: looks like a placeholder"}},
		{"placeholder", production(map[string]string{"DJANGO_SECRET_KEY": goodSecret + "PLACEHOLDER"}), []string{"config: DJANGO_SECRET_KEY: looks like a placeholder"}},
		{"short", production(map[string]string{"DJANGO_SECRET_KEY": goodSecret[:31]}), []string{"config: DJANGO_SECRET_KEY: is shorter than 32 characters"}},
		{"repetitive", production(map[string]string{"DJANGO_SECRET_KEY": strings.Repeat("ab", 20)}), []string{"config: DJANGO_SECRET_KEY: has fewer than 5 distinct characters"}},
		{"weak alias names alias", production(map[string]string{"DJANGO_SECRET_KEY": "", "SECRET_KEY": "short"}), []string{"config: SECRET_KEY: is shorter than 32 characters; set DJANGO_SECRET_KEY"}},
		{"weak CSRF key", production(map[string]string{"CSRF_SECRET_KEY": "short"}), []string{"config: CSRF_SECRET_KEY: is shorter than 32 characters"}},
		{"missing API key", production(map[string]string{"AUTH_API_KEY": ""}), []string{
			"config: AUTH_API_KEY: required when DJANGO_DEBUG is off", "config: DJANGO_DEBUG is off (the default), so the server does not start without AUTH_API_KEY (or AUTH_DISABLED=1);",
		}},
		{"both", production(map[string]string{"AUTH_API_KEY": "", "DJANGO_SECRET_KEY": ""}), []string{
			"config: DJANGO_SECRET_KEY: required", "config: AUTH_API_KEY: required",
			"config: DJANGO_DEBUG is off (the default), so the server does not start without DJANGO_SECRET_KEY and AUTH_API_KEY (or AUTH_DISABLED=1);",
		}},
		{"DEBUG unset is off", map[string]string{"DJANGO_SECRET_KEY": goodSecret}, []string{
			"config: AUTH_API_KEY: required when DJANGO_DEBUG is off", "config: DJANGO_DEBUG is off (the default)",
		}},
		{"debug on skips checks", map[string]string{"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": "x"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadEnv(t, tt.env)
			if len(tt.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, Config{}, cfg)
			lines := errLines(err)
			require.Len(t, lines, len(tt.want), "errors: %v", err)
			for i, want := range tt.want {
				assert.True(t, strings.HasPrefix(lines[i], want), "got %q, want prefix %q", lines[i], want)
			}
		})
	}
}

func TestProductionConfig(t *testing.T) {
	cfg, err := loadEnv(t, production(map[string]string{"CSRF_SECRET_KEY": "csrf-" + goodSecret}))
	require.NoError(t, err)
	assert.False(t, cfg.Debug)
	assert.False(t, cfg.HTTP.TestPageEnabled)
	assert.True(t, cfg.Auth.Required())
	assert.Equal(t, "csrf-"+goodSecret, cfg.Auth.CSRFSecretKey)
	assert.Empty(t, cfg.Warnings)

	cfg, err = loadEnv(t, production(map[string]string{"TEST_PAGE_ENABLED": "1"}))
	require.NoError(t, err)
	assert.True(t, cfg.HTTP.TestPageEnabled)

	cfg, err = loadEnv(t, dev(map[string]string{"TEST_PAGE_ENABLED": "0"}))
	require.NoError(t, err)
	assert.True(t, cfg.Debug)
	assert.False(t, cfg.HTTP.TestPageEnabled, "an explicit setting wins over DEBUG")
}

func TestWarnings(t *testing.T) {
	cfg, err := loadEnv(t, production(map[string]string{
		"DJANGO_ALLOWED_HOSTS": "*",
		"ALLOWED_ORIGINS":      "*",
		"AUTH_DISABLED":        "1",
		"DATABASE_URL":         "postgres://h/d",
		"PSQL_HOST":            "db",
	}))
	require.NoError(t, err)
	all := strings.Join(cfg.Warnings, "\n")
	assert.Len(t, cfg.Warnings, 4)
	assert.Contains(t, all, `DJANGO_ALLOWED_HOSTS contains "*"`)
	assert.Contains(t, all, `ALLOWED_ORIGINS contains "*"`)
	assert.Contains(t, all, "AUTH_DISABLED is on")
	assert.Contains(t, all, "DATABASE_URL is used")
	assert.False(t, cfg.Auth.Required(), "AUTH_DISABLED turns the check off even with a key")
}

func TestTrustingEveryAddressWarns(t *testing.T) {
	cfg, err := loadEnv(t, production(map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,0.0.0.0/0,::/0"}))
	require.NoError(t, err)
	assert.Equal(t, []string{
		"TRUSTED_PROXIES contains 0.0.0.0/0: every peer is trusted, so any client can choose its address with X-Forwarded-For",
		"TRUSTED_PROXIES contains ::/0: every peer is trusted, so any client can choose its address with X-Forwarded-For",
	}, cfg.Warnings)
}

// A setting only Bedrock reads, set without AWS_BEDROCK_REGION and
// BEDROCK_MODEL_ID_CHAT, would be ignored on the local model: Load refuses it,
// naming every such setting, and Validate refuses it in a Config built by hand.
func TestBedrockSettingWithoutBedrock(t *testing.T) {
	const needs = ": needs AWS_BEDROCK_REGION and BEDROCK_MODEL_ID_CHAT, which select the Bedrock adapters"
	tests := []struct {
		env  map[string]string
		want []string // every error line
	}{
		{map[string]string{"BEDROCK_MODEL_ID_SUMMARY": "summary"}, []string{"config: BEDROCK_MODEL_ID_SUMMARY" + needs}},
		{map[string]string{"BEDROCK_GUARDRAIL_ID": "gr", "BEDROCK_GUARDRAIL_VERSION": "1"}, []string{"config: BEDROCK_GUARDRAIL_ID" + needs}},
		{map[string]string{"BEDROCK_MODEL_ID_GUARDRAIL": "judge"}, []string{"config: BEDROCK_MODEL_ID_GUARDRAIL" + needs}},
		{map[string]string{"BEDROCK_MODEL_ID_ESCALATION": "classifier"}, []string{"config: BEDROCK_MODEL_ID_ESCALATION" + needs}},
		{map[string]string{"BEDROCK_MODEL_ID_SUMMARY": "summary", "BEDROCK_MODEL_ID_ESCALATION": "classifier"}, []string{
			"config: BEDROCK_MODEL_ID_SUMMARY" + needs,
			"config: BEDROCK_MODEL_ID_ESCALATION" + needs,
		}},
	}
	for _, tt := range tests {
		var name string
		for k := range tt.env {
			name += k + " "
		}
		t.Run(name, func(t *testing.T) {
			_, err := loadEnv(t, dev(tt.env))
			require.Error(t, err)
			assert.Equal(t, tt.want, errLines(err))

			// The same settings with Bedrock selected load.
			selected := dev(tt.env)
			selected["AWS_BEDROCK_REGION"], selected["BEDROCK_MODEL_ID_CHAT"] = "eu-west-1", "chat"
			cfg, err := loadEnv(t, selected)
			require.NoError(t, err)
			assert.True(t, cfg.Bedrock.Enabled())
			require.NoError(t, cfg.Validate())

			// A Config built by hand meets the same rule.
			cfg.Bedrock.Region, cfg.Bedrock.ChatModelID = "", ""
			assert.False(t, cfg.Bedrock.Enabled())
			assert.Equal(t, tt.want, errLines(cfg.Validate()))
		})
	}

	// A broken pair is the one error: mending it may select Bedrock.
	_, err := loadEnv(t, dev(map[string]string{"AWS_BEDROCK_REGION": "eu-west-1", "BEDROCK_MODEL_ID_ESCALATION": "classifier"}))
	assert.Equal(t, []string{"config: BEDROCK_MODEL_ID_CHAT: required when AWS_BEDROCK_REGION is set"}, errLines(err))
}

func TestLoadOpenAI(t *testing.T) {
	cfg, err := loadEnv(t, dev(map[string]string{
		"OPENAI_BASE_URL":            "http://localhost:11434/v1",
		"OPENAI_API_KEY":             " sk-local \n",
		"OPENAI_MODEL_ID_CHAT":       "llama3.2",
		"OPENAI_MODEL_ID_SUMMARY":    "qwen2.5:7b",
		"OPENAI_MODEL_ID_GUARDRAIL":  "llama-guard3:1b",
		"OPENAI_MODEL_ID_ESCALATION": "llama3.2:1b",
		"OPENAI_STREAM_USAGE":        "off",
	}))
	require.NoError(t, err)
	assert.Equal(t, OpenAI{
		BaseURL: "http://localhost:11434/v1", APIKey: "sk-local", ChatModelID: "llama3.2", SummaryModelID: "qwen2.5:7b",
		GuardrailModelID: "llama-guard3:1b", EscalationModelID: "llama3.2:1b", StreamUsage: false,
	}, cfg.OpenAI, "the key is trimmed like every key")
	assert.True(t, cfg.OpenAI.Enabled())
	assert.Equal(t, ProviderOpenAI, cfg.Provider())
	require.NoError(t, cfg.Validate())
}

func TestProvider(t *testing.T) {
	for env, want := range map[string]map[string]string{
		ProviderLocal:   nil,
		ProviderBedrock: {"AWS_BEDROCK_REGION": "eu-west-1", "BEDROCK_MODEL_ID_CHAT": "chat"},
		ProviderOpenAI:  {"OPENAI_BASE_URL": "http://vllm:8000/v1", "OPENAI_MODEL_ID_CHAT": "m"},
	} {
		cfg, err := loadEnv(t, dev(want))
		require.NoError(t, err)
		assert.Equal(t, env, cfg.Provider())
	}
}

// Two providers at once stop start-up, naming both, in Load and in Validate.
func TestTwoProvidersStopStart(t *testing.T) {
	const want = "config: AWS_BEDROCK_REGION and BEDROCK_MODEL_ID_CHAT select bedrock, and OPENAI_BASE_URL and OPENAI_MODEL_ID_CHAT select openai: " +
		"choose one model provider, and unset the other's settings"
	both := dev(map[string]string{
		"AWS_BEDROCK_REGION": "eu-west-1", "BEDROCK_MODEL_ID_CHAT": "chat",
		"OPENAI_BASE_URL": "http://vllm:8000/v1", "OPENAI_MODEL_ID_CHAT": "m",
	})
	_, err := loadEnv(t, both)
	assert.Equal(t, []string{want}, errLines(err))

	cfg, err := loadEnv(t, dev(nil))
	require.NoError(t, err)
	cfg.Bedrock.Region, cfg.Bedrock.ChatModelID = "eu-west-1", "chat"
	cfg.OpenAI.BaseURL, cfg.OpenAI.ChatModelID = "http://vllm:8000/v1", "m"
	assert.Equal(t, []string{want}, errLines(cfg.Validate()))
}

// A setting only the openai adapters read, set without OPENAI_BASE_URL and
// OPENAI_MODEL_ID_CHAT, would be ignored: Load refuses it, and Validate refuses it
// in a Config built by hand.
func TestOpenAISettingWithoutOpenAI(t *testing.T) {
	const needs = ": needs OPENAI_BASE_URL and OPENAI_MODEL_ID_CHAT, which select the openai adapters"
	for _, name := range []string{"OPENAI_API_KEY", "OPENAI_MODEL_ID_SUMMARY", "OPENAI_MODEL_ID_GUARDRAIL", "OPENAI_MODEL_ID_ESCALATION", "OPENAI_STREAM_USAGE"} {
		t.Run(name, func(t *testing.T) {
			_, err := loadEnv(t, dev(map[string]string{name: "1"}))
			require.Error(t, err)
			assert.Equal(t, []string{"config: " + name + needs}, errLines(err))

			selected := dev(map[string]string{name: "1", "OPENAI_BASE_URL": "http://vllm:8000/v1", "OPENAI_MODEL_ID_CHAT": "m"})
			cfg, err := loadEnv(t, selected)
			require.NoError(t, err)
			require.NoError(t, cfg.Validate())
			if name == "OPENAI_STREAM_USAGE" {
				return // a bool: a Config built by hand cannot tell it was set
			}
			cfg.OpenAI.BaseURL, cfg.OpenAI.ChatModelID = "", ""
			assert.Equal(t, []string{"config: " + name + needs}, errLines(cfg.Validate()))
		})
	}
	// A Bedrock setting with openai selected is still one only Bedrock reads.
	_, err := loadEnv(t, dev(map[string]string{"OPENAI_BASE_URL": "http://vllm:8000/v1", "OPENAI_MODEL_ID_CHAT": "m", "BEDROCK_MODEL_ID_GUARDRAIL": "judge"}))
	assert.Equal(t, []string{"config: BEDROCK_MODEL_ID_GUARDRAIL: needs AWS_BEDROCK_REGION and BEDROCK_MODEL_ID_CHAT, which select the Bedrock adapters"}, errLines(err))
}

func TestValidateAcceptsWhatLoadAccepts(t *testing.T) {
	for _, env := range []map[string]string{dev(nil), production(nil)} {
		cfg, err := loadEnv(t, env)
		require.NoError(t, err)
		assert.NoError(t, cfg.Validate())
		assert.False(t, cfg.Bedrock.Enabled())
	}
}

// CheckedKey is the key the edge checks: none unless a key is set and
// AUTH_DISABLED is off.
func TestCheckedKey(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{dev(nil), ""},
		{dev(map[string]string{"AUTH_API_KEY": "dev-key"}), "dev-key"},
		{dev(map[string]string{"AUTH_API_KEY": "dev-key", "AUTH_DISABLED": "1"}), ""},
		{production(nil), "api-key-for-tests"},
		{production(map[string]string{"AUTH_DISABLED": "1"}), ""},
		{production(map[string]string{"AUTH_API_KEY": "", "AUTH_DISABLED": "1"}), ""},
	}
	for i, tt := range tests {
		cfg, err := loadEnv(t, tt.env)
		require.NoError(t, err, "case %d", i)
		assert.Equal(t, tt.want, cfg.Auth.CheckedKey(), "case %d", i)
	}
}
