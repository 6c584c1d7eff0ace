// Package fullstack tests the stack as it ships: the image built from the
// Dockerfile, run as two containers beside Redis and PostgreSQL on one
// Docker network, and driven from outside as clients and a load balancer
// drive it.
//
// The first test that needs the image builds it, once per run, with the
// docker CLI (the classic builder is enough) and tags it
// wsserver-test/wsserver:fullstack; a later run reuses its layers and
// removes the image it replaces. The environment
// names the base images, as test/images/env.sh exports them:
//
//   - GO_IMAGE, RUNTIME_IMAGE: the Dockerfile's build arguments, when set.
//   - GOPROXY: passed on to the build; default `go env GOPROXY`.
//   - TEST_REDIS_IMAGE, TEST_POSTGRES_IMAGE: see test/containers.
//
// The tests need a local docker daemon; -short skips them.
package fullstack

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// image is the tag the tests build and run.
const image = "wsserver-test/wsserver:fullstack"

// buildTimeout bounds the image build: a cold one downloads every module
// and compiles everything in the builder.
const buildTimeout = 15 * time.Minute

// build builds the image on first use; buildErr is why it failed.
var (
	build    sync.Once
	buildErr error
)

// buildImage runs docker build on the repository with the build arguments
// the environment gives. When the tag moves, the image it named before is
// removed, so repeated runs do not pile up images.
func buildImage(ctx context.Context) error {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return err
	}
	args := []string{"build", "--tag", image}
	for _, name := range []string{"GO_IMAGE", "RUNTIME_IMAGE", "GOPROXY"} {
		v := os.Getenv(name)
		if v == "" && name == "GOPROXY" {
			v = goEnv(ctx, "GOPROXY")
		}
		if v != "" {
			args = append(args, "--build-arg", name+"="+v)
		}
	}
	before := imageID(ctx, image)
	out, err := exec.CommandContext(ctx, "docker", append(args, root)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	if before != "" && before != imageID(ctx, image) {
		// Still in use by a container, or shared: then it stays.
		_ = exec.CommandContext(ctx, "docker", "image", "rm", before).Run()
	}
	return nil
}

// imageID returns the id of the image named ref, or "" when there is none.
func imageID(ctx context.Context, ref string) string {
	out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{.Id}}", ref).Output()
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(out))
}

func goEnv(ctx context.Context, name string) string {
	out, err := exec.CommandContext(ctx, "go", "env", name).Output()
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(out))
}

// needImage skips the test under -short, builds the image unless an
// earlier test did, and fails the test when the image could not be built.
func needImage(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs docker: builds and runs the image (skipped by -short)")
	}
	build.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		start := time.Now()
		buildErr = buildImage(ctx)
		t.Logf("docker build %s: %s", image, time.Since(start).Round(time.Second))
	})
	if buildErr != nil {
		t.Fatalf("build the image: %v", buildErr)
	}
}
