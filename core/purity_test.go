// Package core_test checks that the domain stays pure.
package core_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCoreImportsNoTechnology keeps core/ and ports/ free of the
// libraries that adapters plug in: the hexagon's one rule.
func TestCoreImportsNoTechnology(t *testing.T) {
	forbidden := []string{
		"github.com/labstack/echo", "github.com/gorilla/websocket", "github.com/redis/rueidis",
		"github.com/jackc/pgx", "github.com/aws/", "github.com/spf13/viper",
		"github.com/testcontainers/", "github.com/prometheus/", "github.com/wsserver/wsserver/adapters/",
	}
	for _, pkgs := range []string{"github.com/wsserver/wsserver/core/...", "github.com/wsserver/wsserver/ports"} {
		out, err := exec.Command("go", "list", "-deps", pkgs).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkgs, err, out)
		}
		for dep := range strings.FieldsSeq(string(out)) {
			if dep == "net/http" {
				t.Errorf("%s depends on net/http", pkgs)
			}
			for _, f := range forbidden {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s depends on %s", pkgs, dep)
				}
			}
		}
	}
}
