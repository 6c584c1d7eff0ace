// Package local holds the adapters that make the server chat with no cloud
// account: a deterministic model built into the binary, and a rule-based
// guardrail and escalation detector. Their prompts and rules are appdata:
// defaults embedded in the binary, each replaced by the file of the same
// name in APPDATA_FOLDER_PATH when that folder has one.
package local

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

//go:embed appdata/*.txt
var embedded embed.FS

// Names of the appdata files.
const (
	SystemPromptFile    = "system_prompt.txt"
	SummaryPromptFile   = "summary_prompt.txt"
	GuardrailRulesFile  = "guardrail_rules.txt"
	EscalationRulesFile = "escalation_rules.txt"
)

// Appdata is the prompts and rules of the conversation.
type Appdata struct {
	SystemPrompt  string
	SummaryPrompt string
	Guardrail     []Rule
	Escalation    EscalationRules
	// Origin tells, for each file, where it was read: "embedded" or its
	// path. Worth logging at start.
	Origin map[string]string
}

// EscalationRules are the parsed escalation_rules.txt.
type EscalationRules struct {
	// Rules escalate with their reason: user_requested or rule.
	Rules []Rule
	// Frustration rules are signs of frustration: FrustrationThreshold of
	// the user's last FrustrationWindow messages must match one.
	Frustration          []Rule
	FrustrationThreshold int
	FrustrationWindow    int
}

// LoadAppdata reads the appdata: each file from dir when dir has it, else
// the embedded default. An empty dir means the defaults only; a dir that
// is not a folder is an error. Rule files are validated: an error names
// the file and line.
func LoadAppdata(dir string) (Appdata, error) {
	if dir != "" {
		st, err := os.Stat(dir)
		if err != nil {
			return Appdata{}, fmt.Errorf("local: appdata folder: %w", err)
		}
		if !st.IsDir() {
			return Appdata{}, fmt.Errorf("local: appdata folder %s is not a folder", dir)
		}
	}
	a := Appdata{Origin: map[string]string{}}
	read := func(name string) ([]byte, error) {
		data, origin, err := readAppdata(dir, name)
		a.Origin[name] = origin
		return data, err
	}

	data, err := read(SystemPromptFile)
	if err != nil {
		return Appdata{}, err
	}
	a.SystemPrompt = string(data)
	if data, err = read(SummaryPromptFile); err != nil {
		return Appdata{}, err
	}
	a.SummaryPrompt = string(data)

	if data, err = read(GuardrailRulesFile); err != nil {
		return Appdata{}, err
	}
	if a.Guardrail, _, err = parseRules(label(a.Origin, GuardrailRulesFile), data, nil, false); err != nil {
		return Appdata{}, err
	}

	if data, err = read(EscalationRulesFile); err != nil {
		return Appdata{}, err
	}
	if a.Escalation, err = parseEscalationRules(label(a.Origin, EscalationRulesFile), data); err != nil {
		return Appdata{}, err
	}
	return a, nil
}

// label names a file in messages: its path, or its name when embedded.
func label(origin map[string]string, name string) string {
	if o := origin[name]; o != "embedded" {
		return o
	}
	return name + " (embedded)"
}

// readAppdata returns the file name from dir, or the embedded one.
func readAppdata(dir, name string) (data []byte, origin string, err error) {
	if dir != "" {
		path := filepath.Join(dir, name)
		f, err := os.Open(path) // #nosec G304 -- the folder is the operator's APPDATA_FOLDER_PATH
		switch {
		case err == nil:
			data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
			_ = f.Close() // read-only: nothing to lose
			if err != nil {
				return nil, path, fmt.Errorf("local: %w", err)
			}
			if len(data) > MaxFileBytes {
				return nil, path, fmt.Errorf("local: %s: larger than %d bytes", path, MaxFileBytes)
			}
			return data, path, nil
		case !errors.Is(err, fs.ErrNotExist):
			return nil, path, fmt.Errorf("local: %w", err)
		}
	}
	data, err = embedded.ReadFile("appdata/" + name)
	if err != nil {
		return nil, "embedded", fmt.Errorf("local: embedded %s: %w", name, err)
	}
	return data, "embedded", nil
}

func parseEscalationRules(file string, data []byte) (EscalationRules, error) {
	rules, settings, err := parseRules(file, data, []string{"user_requested", "rule", "frustration"}, true)
	if err != nil {
		return EscalationRules{}, err
	}
	er := EscalationRules{FrustrationThreshold: 2, FrustrationWindow: 3}
	for _, r := range rules {
		if r.Reason == "frustration" {
			er.Frustration = append(er.Frustration, r)
		} else {
			er.Rules = append(er.Rules, r)
		}
	}
	for _, s := range settings {
		n, err := strconv.Atoi(s.value)
		if err != nil || n < 1 || n > 100 {
			return EscalationRules{}, fmt.Errorf("local: %s: setting %s must be a whole number from 1 to 100, got %q", s.where, s.name, s.value)
		}
		switch s.name {
		case "frustration_threshold":
			er.FrustrationThreshold = n
		case "frustration_window":
			er.FrustrationWindow = n
		default:
			return EscalationRules{}, fmt.Errorf("local: %s: unknown setting %q (want frustration_threshold or frustration_window)", s.where, s.name)
		}
	}
	if er.FrustrationThreshold > er.FrustrationWindow {
		return EscalationRules{}, fmt.Errorf("local: %s: frustration_threshold %d is larger than frustration_window %d",
			file, er.FrustrationThreshold, er.FrustrationWindow)
	}
	return er, nil
}
