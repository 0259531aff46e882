package datapath

import (
	"os"
	"testing"
)

// TestMain dispatches the helper processes that tests start by
// re-executing the test binary, so that a helper is never a (skipped) test.
func TestMain(m *testing.M) {
	if arg := os.Getenv(sockopsHelperEnv); arg != "" {
		os.Exit(runSockopsHelper(arg))
	}
	os.Exit(m.Run())
}
