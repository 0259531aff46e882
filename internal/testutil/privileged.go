package testutil

import (
	"os"
	"testing"
)

// PrivilegedEnv is the variable that turns privileged tests on. CI sets it.
const PrivilegedEnv = "MOAT_PRIVILEGED_TESTS"

// Privileged gates a TestPrivileged* test. Without MOAT_PRIVILEGED_TESTS=1 the
// test is skipped. With it, the test runs, and a missing prerequisite must be
// reported with Require, which fails instead of skipping.
func Privileged(t testing.TB) {
	t.Helper()
	if os.Getenv(PrivilegedEnv) != "1" {
		t.Skipf("privileged test: set %s=1 and run as root", PrivilegedEnv)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s=1 but not running as root (euid %d)", PrivilegedEnv, os.Geteuid())
	}
}

// Require fails the test (never skips) when err is not nil: with privileged
// tests switched on, a missing capability or kernel feature is a failure.
func Require(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("privileged test prerequisite %s missing: %v", what, err)
	}
}
