package docs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// mdLink is a Markdown link's target: [text](target).
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestLinksResolveInTheRepository checks that every relative link of the
// project's Markdown files names a file of the repository, so that a
// clone holds everything its documents point at (the contract above all).
func TestLinksResolveInTheRepository(t *testing.T) {
	files := []string{"../README.md", "../deployments/README.md"}
	more, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, more...)
	for _, file := range files {
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllSubmatch(body, -1) {
			target := string(m[1])
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			path := filepath.Join(filepath.Dir(file), target)
			abs, err := filepath.Abs(path)
			if err != nil {
				t.Fatal(err)
			}
			root, _ := filepath.Abs("..")
			if !strings.HasPrefix(abs, root+string(filepath.Separator)) {
				t.Errorf("%s links to %s, outside the repository", file, m[1])
				continue
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s links to %s, which a clone does not hold: %v", file, m[1], err)
			}
		}
	}
}
