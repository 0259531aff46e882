// Command testreport reads `go test -json` on stdin and prints what a person
// needs: one line per package, the output of every failed test, every
// skipped test with its reason, and a last line exactly of the form
//
//	N passed, N failed, N skipped
//
// It exits non-zero when a test or package failed, when a test skipped
// without being on the short allowlist below (a skip must never hide a
// test that CI believes ran), or when it saw no test at all. `make test`
// pipes into it, and .ci/run runs `make test`. It must never change what a
// test does: it only reads events.
package main
