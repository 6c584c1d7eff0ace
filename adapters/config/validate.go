package config

// The rules that judge settings rather than read them: what a start with DEBUG off
// requires of the secrets, the settings that only make sense together, and the
// warnings an operator should see.

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// auth reads the secrets and the API key; with DEBUG off it refuses what a
// production server must not run with.
func (l *loader) auth(debug bool) Auth {
	var a Auth
	// Keys are trimmed like every other value: a stray newline from a secrets file
	// would otherwise make the API key impossible to send in a header.
	key, keyName, keySet := l.raw("DJANGO_SECRET_KEY", "SECRET_KEY")
	a.SecretKey = DevSecretKey
	if keySet {
		a.SecretKey = strings.TrimSpace(key)
	}
	csrf, csrfName, csrfSet := l.raw("CSRF_SECRET_KEY")
	a.CSRFSecretKey = a.SecretKey
	if csrfSet {
		a.CSRFSecretKey = strings.TrimSpace(csrf)
	}
	a.APIKey = l.str("", "AUTH_API_KEY")
	a.Disabled, _ = l.boolean(false, "AUTH_DISABLED")

	if debug {
		return a
	}
	// Production: refuse anything that looks like a development secret.
	if !keySet {
		l.fail(keyName, "required when DJANGO_DEBUG is off; set DJANGO_SECRET_KEY to a random value of at least %d characters", minSecretKeyLen)
		l.missing = append(l.missing, "DJANGO_SECRET_KEY")
	} else if why := weakSecret(a.SecretKey); why != "" {
		l.fail(keyName, "%s; set DJANGO_SECRET_KEY to a random value of at least %d characters when DJANGO_DEBUG is off", why, minSecretKeyLen)
	}
	if csrfSet {
		if why := weakSecret(a.CSRFSecretKey); why != "" {
			l.fail(csrfName, "%s; use a random value of at least %d characters when DJANGO_DEBUG is off", why, minSecretKeyLen)
		}
	}
	if a.APIKey == "" && !a.Disabled {
		l.fail("AUTH_API_KEY", "required when DJANGO_DEBUG is off (or set AUTH_DISABLED=1 to run without authentication)")
		l.missing = append(l.missing, "AUTH_API_KEY (or AUTH_DISABLED=1)")
	}
	return a
}

// weakSecret says why a secret is unfit for production, or returns "". It never
// includes the secret.
func weakSecret(s string) string {
	lower := strings.ToLower(s)
	switch {
	case isDevSecret(s):
		return "is the development placeholder"
	case strings.Contains(lower, "change-me"), strings.Contains(lower, "changeme"),
		strings.Contains(lower, "change_me"), strings.Contains(lower, "placeholder"):
		return "looks like a placeholder"
	case len(s) < minSecretKeyLen:
		return fmt.Sprintf("is shorter than %d characters", minSecretKeyLen)
	}
	distinct := map[rune]bool{}
	for _, r := range s {
		distinct[r] = true
	}
	if len(distinct) < 5 {
		return "has fewer than 5 distinct characters"
	}
	return ""
}

// Validate checks the rules that join settings: the Bedrock settings that go in
// pairs, and those that only Bedrock reads, which need AWS_BEDROCK_REGION and
// BEDROCK_MODEL_ID_CHAT to select it; the same for the OpenAI-compatible endpoint's,
// which need OPENAI_BASE_URL and OPENAI_MODEL_ID_CHAT; and one model provider at
// most. Load applies them to what it reads; app.Run applies them again, so that a
// Config built by hand is held to the same rules. Each error names its variable, as
// Load's do.
func (c Config) Validate() error {
	errs := append(c.Bedrock.problems(), c.OpenAI.problems()...)
	return errors.Join(append(errs, c.providerProblems()...)...)
}

// Model providers, as Provider names them.
const (
	ProviderLocal   = "local"
	ProviderBedrock = "bedrock"
	ProviderOpenAI  = "openai"
)

// Provider names the model provider the settings select: "bedrock", "openai", or
// "local" when neither is. Validate refuses settings that select both.
func (c Config) Provider() string {
	switch {
	case c.Bedrock.Enabled():
		return ProviderBedrock
	case c.OpenAI.Enabled():
		return ProviderOpenAI
	default:
		return ProviderLocal
	}
}

// providerProblems refuses two model providers at once: which one answers would
// otherwise be a guess.
func (c Config) providerProblems() []error {
	if c.Bedrock.Enabled() && c.OpenAI.Enabled() {
		return []error{errors.New("config: AWS_BEDROCK_REGION and BEDROCK_MODEL_ID_CHAT select bedrock, and OPENAI_BASE_URL and OPENAI_MODEL_ID_CHAT select openai: choose one model provider, and unset the other's settings")}
	}
	return nil
}

// Enabled reports whether the OpenAI-compatible endpoint is selected:
// OPENAI_BASE_URL and OPENAI_MODEL_ID_CHAT together select it.
func (o OpenAI) Enabled() bool { return o.BaseURL != "" && o.ChatModelID != "" }

// problems returns what is wrong with the OpenAI settings taken together.
func (o OpenAI) problems() []error {
	var errs []error
	fail := func(name, msg string) { errs = append(errs, fmt.Errorf("config: %s: %s", name, msg)) }
	switch {
	case o.BaseURL != "" && o.ChatModelID == "":
		fail("OPENAI_MODEL_ID_CHAT", "required when OPENAI_BASE_URL is set")
	case o.BaseURL == "" && o.ChatModelID != "":
		fail("OPENAI_BASE_URL", "required when OPENAI_MODEL_ID_CHAT is set")
	}
	if o.BaseURL != "" {
		u, err := url.Parse(o.BaseURL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			fail("OPENAI_BASE_URL", "must be an http:// or https:// URL with a host, such as http://localhost:11434/v1")
		case u.User != nil:
			// The key goes in OPENAI_API_KEY, which is sent as a bearer token
			// and never logged.
			fail("OPENAI_BASE_URL", "must not carry a user or password; set OPENAI_API_KEY")
		case u.RawQuery != "" || u.Fragment != "":
			fail("OPENAI_BASE_URL", "must not carry a query or fragment: /chat/completions is appended to it")
		}
	}
	if len(errs) == 0 && !o.Enabled() {
		for _, v := range []struct{ name, value string }{
			{"OPENAI_API_KEY", o.APIKey},
			{"OPENAI_MODEL_ID_SUMMARY", o.SummaryModelID},
			{"OPENAI_MODEL_ID_GUARDRAIL", o.GuardrailModelID},
			{"OPENAI_MODEL_ID_ESCALATION", o.EscalationModelID},
		} {
			if v.value != "" {
				fail(v.name, "needs OPENAI_BASE_URL and OPENAI_MODEL_ID_CHAT, which select the openai adapters")
			}
		}
	}
	return errs
}

// Enabled reports whether Bedrock is selected: AWS_BEDROCK_REGION and
// BEDROCK_MODEL_ID_CHAT together select it, and the local adapters run otherwise.
func (b Bedrock) Enabled() bool { return b.Region != "" && b.ChatModelID != "" }

// problems returns what is wrong with the Bedrock settings taken together.
func (b Bedrock) problems() []error {
	var errs []error
	fail := func(name, msg string) { errs = append(errs, fmt.Errorf("config: %s: %s", name, msg)) }
	// The bedrock adapters are selected by a region and a chat model
	// together; one without the other is a mistake, not the local model.
	switch {
	case b.Region != "" && b.ChatModelID == "":
		fail("BEDROCK_MODEL_ID_CHAT", "required when AWS_BEDROCK_REGION is set")
	case b.Region == "" && b.ChatModelID != "":
		fail("AWS_BEDROCK_REGION", "required when BEDROCK_MODEL_ID_CHAT is set")
	}
	switch {
	case b.GuardrailID != "" && b.GuardrailVersion == "":
		fail("BEDROCK_GUARDRAIL_VERSION", "required when BEDROCK_GUARDRAIL_ID is set")
	case b.GuardrailID == "" && b.GuardrailVersion != "":
		fail("BEDROCK_GUARDRAIL_ID", "required when BEDROCK_GUARDRAIL_VERSION is set")
	case b.GuardrailStreamMode != "" && b.GuardrailID == "":
		fail("BEDROCK_GUARDRAIL_ID", "required when BEDROCK_GUARDRAIL_STREAM_MODE is set: Bedrock checks the stream with that guardrail")
	}
	// Without Bedrock, a setting only Bedrock reads would be ignored: it stops
	// start-up instead. A broken pair above is reported alone: mending it may
	// be what selects Bedrock.
	if len(errs) == 0 && !b.Enabled() {
		for _, v := range []struct{ name, value string }{
			{"BEDROCK_MODEL_ID_SUMMARY", b.SummaryModelID},
			{"BEDROCK_GUARDRAIL_ID", b.GuardrailID},
			{"BEDROCK_MODEL_ID_GUARDRAIL", b.GuardrailModelID},
			{"BEDROCK_MODEL_ID_ESCALATION", b.EscalationModelID},
		} {
			if v.value != "" {
				fail(v.name, "needs AWS_BEDROCK_REGION and BEDROCK_MODEL_ID_CHAT, which select the Bedrock adapters")
			}
		}
	}
	return errs
}

// checkWarnings notes the settings that are allowed but open something up.
func (l *loader) checkWarnings(c Config) {
	if c.Debug {
		l.warn("%s", debugWarning(c))
	}
	if slices.Contains(c.HTTP.Hosts.Allowed, "*") {
		l.warn("DJANGO_ALLOWED_HOSTS contains \"*\": requests for any Host are accepted")
	}
	if slices.Contains(c.HTTP.Hosts.Origins, "*") {
		l.warn("ALLOWED_ORIGINS contains \"*\": WebSocket upgrades from any Origin are accepted")
	}
	if c.Auth.Disabled {
		l.warn("AUTH_DISABLED is on: no API key is checked")
	}
	for _, p := range c.HTTP.TrustedProxies {
		if p.Bits() == 0 {
			l.warn("TRUSTED_PROXIES contains %s: every peer is trusted, so any client can choose its address with X-Forwarded-For", p)
		}
	}
}

// debugWarning is the one loud line of a start with DEBUG on: what is open, so that
// nobody mistakes a development server for a production one.
func debugWarning(c Config) string {
	var open []string
	if !c.Auth.Required() {
		open = append(open, "no API key is checked")
	}
	if isDevSecret(c.Auth.SecretKey) || isDevSecret(c.Auth.CSRFSecretKey) {
		open = append(open, "tokens are signed with the public development secret")
	}
	if c.HTTP.TestPageEnabled {
		open = append(open, "the test page is served at /ws-test/")
	}
	what := "development checks are relaxed"
	if len(open) > 0 {
		what = strings.Join(open, ", ")
	}
	return "DJANGO_DEBUG is on: THIS SERVER IS OPEN FOR DEVELOPMENT (" + what + "); never expose it, and leave DJANGO_DEBUG unset in production"
}
