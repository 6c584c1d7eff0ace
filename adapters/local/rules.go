package local

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of a rule file. They keep a wrong file from slowing every message.
const (
	MaxFileBytes   = 64 << 10
	MaxRules       = 500
	MaxPatternLen  = 1024
	maxReasonBytes = 64
)

// Rule is one line of a rule file: text matching Pattern has Reason.
type Rule struct {
	// Kind is "phrase" or "regex".
	Kind string
	// Reason is the rule's second column.
	Reason string
	// Pattern is the rule's text as written.
	Pattern string
	// Where names the file and line, for messages.
	Where string
	re    *regexp.Regexp
	// words are ASCII texts in lower case, one of which every match
	// holds, in any case (required); nil when the expression does not
	// tell.
	words []string
}

// Match returns the first text of s that the rule matches, and whether it
// matched. The rule's regular expression runs only on text that holds
// one of its words: most text holds none of the rules', and a byte scan
// costs a fraction of the expression's backtracking (BenchmarkRules).
// Only ASCII text is scanned so: (?i) also matches k and s with the Kelvin
// sign and the long s, which a byte scan would miss.
func (r Rule) Match(s string) (string, bool) {
	if r.words != nil && isASCII(s) && !containsAnyFoldASCII(s, r.words) {
		return "", false
	}
	loc := r.re.FindStringIndex(s)
	if loc == nil {
		return "", false
	}
	return s[loc[0]:loc[1]], true
}

// setting is a "setting NAME VALUE" line.
type setting struct {
	name, value, where string
}

// parseRules reads a rule file. reasons, when not nil, lists the reasons
// allowed; settings, when true, allows setting lines. Every error names
// the file and line.
func parseRules(file string, data []byte, reasons []string, settings bool) ([]Rule, []setting, error) {
	if len(data) > MaxFileBytes {
		return nil, nil, fmt.Errorf("local: %s: larger than %d bytes", file, MaxFileBytes)
	}
	if !utf8.Valid(data) {
		return nil, nil, fmt.Errorf("local: %s: not UTF-8 text", file)
	}
	var rules []Rule
	var sets []setting
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxFileBytes)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		where := file + ":" + strconv.Itoa(n)
		kind, rest := cutField(line)
		reason, pattern := cutField(rest)
		if reason == "" || pattern == "" {
			return nil, nil, fmt.Errorf("local: %s: want KIND REASON PATTERN, got %q", where, line)
		}
		if len(reason) > maxReasonBytes || strings.ContainsFunc(reason, func(r rune) bool { return !isWordRune(r) }) {
			return nil, nil, fmt.Errorf("local: %s: reason %q must be one word of letters, digits and _", where, reason)
		}
		if len(pattern) > MaxPatternLen {
			return nil, nil, fmt.Errorf("local: %s: pattern longer than %d bytes", where, MaxPatternLen)
		}
		if kind == "setting" && settings {
			sets = append(sets, setting{name: reason, value: pattern, where: where})
			continue
		}
		if reasons != nil && !contains(reasons, reason) {
			return nil, nil, fmt.Errorf("local: %s: reason %q is not one of %s", where, reason, strings.Join(reasons, ", "))
		}
		r := Rule{Kind: kind, Reason: reason, Pattern: pattern, Where: where}
		var expr string
		switch kind {
		case "phrase":
			expr = phraseRegexp(pattern)
		case "regex":
			expr = pattern
		default:
			return nil, nil, fmt.Errorf("local: %s: unknown kind %q (want phrase or regex)", where, kind)
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, nil, fmt.Errorf("local: %s: bad regex %q: %w", where, pattern, err)
		}
		if re.MatchString("") {
			return nil, nil, fmt.Errorf("local: %s: pattern %q matches empty text, so every text", where, pattern)
		}
		r.re = re
		if syn, err := syntax.Parse(expr, syntax.Perl); err == nil {
			r.words = required(syn.Simplify())
		}
		if len(rules) == MaxRules {
			return nil, nil, fmt.Errorf("local: %s: more than %d rules", file, MaxRules)
		}
		rules = append(rules, r)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("local: %s: %w", file, err)
	}
	return rules, sets, nil
}

// phraseRegexp matches the phrase's words case-insensitively, as whole
// words, with any spacing between them; a straight apostrophe also
// matches a curly one.
func phraseRegexp(phrase string) string {
	words := strings.Fields(phrase)
	for i, w := range words {
		words[i] = strings.ReplaceAll(regexp.QuoteMeta(w), "'", "['’]")
	}
	expr := `(?i)` + strings.Join(words, `\s+`)
	if r, _ := utf8.DecodeRuneInString(phrase); isWordRune(r) {
		expr = `(?i)\b` + expr[len(`(?i)`):]
	}
	if r, _ := utf8.DecodeLastRuneInString(phrase); isWordRune(r) {
		expr += `\b`
	}
	return expr
}

// required returns texts, lower-case ASCII, one of which every match of
// re holds in some case, or nil when re does not tell: a literal (in any
// case, since the scan ignores case), one of an alternation's when each
// branch has its own, the most selective of a concatenation's parts (its
// shortest text longest), the part repeated at least once. A literal
// beyond ASCII tells nothing: case folding reaches beyond ASCII there.
func required(re *syntax.Regexp) []string {
	switch re.Op {
	case syntax.OpLiteral:
		s := string(re.Rune)
		if !isASCII(s) {
			return nil
		}
		return []string{strings.ToLower(s)}
	case syntax.OpCapture, syntax.OpPlus:
		return required(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return required(re.Sub[0])
		}
	case syntax.OpConcat:
		var best []string
		for _, sub := range re.Sub {
			if r := required(sub); r != nil && shortest(r) > shortest(best) {
				best = r
			}
		}
		return best
	case syntax.OpAlternate:
		var all []string
		for _, sub := range re.Sub {
			r := required(sub)
			if r == nil {
				return nil
			}
			for _, t := range r {
				if !slices.Contains(all, t) {
					all = append(all, t)
				}
			}
		}
		return all
	}
	return nil
}

// shortest is the length of the shortest of texts; 0 for none.
func shortest(texts []string) int {
	n := 0
	for i, t := range texts {
		if i == 0 || len(t) < n {
			n = len(t)
		}
	}
	return n
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// containsAnyFoldASCII reports whether s holds one of words, lower-case
// ASCII strings, in any case.
func containsAnyFoldASCII(s string, words []string) bool {
	for _, w := range words {
		if containsFoldASCII(s, w) {
			return true
		}
	}
	return false
}

// containsFoldASCII reports whether s holds word, a lower-case ASCII
// string, in any case.
func containsFoldASCII(s, word string) bool {
	for i := 0; i+len(word) <= len(s); i++ {
		j := 0
		for j < len(word) && lowerASCII(s[i+j]) == word[j] {
			j++
		}
		if j == len(word) {
			return true
		}
	}
	return false
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// cutField splits s at its first run of spaces.
func cutField(s string) (field, rest string) {
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}

func isWordRune(r rune) bool {
	return r == '_' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
