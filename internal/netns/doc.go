// Package netns is the one way moat runs code inside a network namespace,
// for production code (datapath) and tests (internal/testutil) alike: Do
// runs a function on a dedicated, locked OS thread that has entered the
// namespace, and hands the thread back to the scheduler only once it is
// back in the namespace it came from. It must never leave a goroutine, or
// a thread that other goroutines may use, in a foreign namespace.
package netns
