// Package testutil holds helpers shared by tests: the privileged-test gate,
// network-namespace helpers and golden-file helpers. It is imported by tests
// only and uses nothing but the standard library (code that enters a netns
// lives in internal/netns, shared with production code).
package testutil
