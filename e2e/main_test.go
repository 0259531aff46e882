package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// binaries are the moat-agent and moat executables the suite drives. They
// are built once per test binary, on first use, so that a run without
// MOAT_PRIVILEGED_TESTS builds nothing.
type binaries struct {
	agent, cli string
}

// suite holds what TestMain sets up for the whole run.
type suite struct {
	dir       string // temp dir for the built binaries
	buildOnce sync.Once
	bins      binaries
	buildErr  error
}

// theSuite is set once by TestMain before any test runs and never replaced.
var theSuite = &suite{}

func TestMain(m *testing.M) {
	// Helper processes that tests start by re-executing this binary.
	if raw := os.Getenv(pushServerEnv); raw != "" {
		os.Exit(runPushServerProcess(raw))
	}
	dir, err := os.MkdirTemp("", "moat-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "create binary dir:", err)
		os.Exit(1)
	}
	theSuite.dir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinaries builds moat-agent and moat with `go build` into the suite's
// temp dir (once) and fails the test when that fails.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	s := theSuite
	s.buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", s.dir+string(filepath.Separator), "./cmd/moat-agent", "./cmd/moat")
		cmd.Dir = ".." // the module root
		if out, err := cmd.CombinedOutput(); err != nil {
			s.buildErr = fmt.Errorf("build moat-agent and moat: %w: %s", err, out)
			return
		}
		s.bins = binaries{agent: filepath.Join(s.dir, "moat-agent"), cli: filepath.Join(s.dir, "moat")}
	})
	if s.buildErr != nil {
		t.Fatal(s.buildErr)
	}
	return s.bins
}
