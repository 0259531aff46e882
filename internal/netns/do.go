package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn inside the network namespace at path (a /var/run/netns file or
// /proc/<pid>/ns/net). fn runs on its own goroutine, locked to an OS thread
// that has entered the namespace; sockets fn opens stay in that namespace
// and may be used from any goroutine afterwards, but goroutines fn starts
// do not run in it. A panic in fn is re-raised in the caller, and when fn
// ends its goroutine with runtime.Goexit (t.Fatal in a test) the caller's
// goroutine ends the same way, after the thread has been dealt with.
func Do(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()

	type result struct {
		err    error
		panic  any
		goexit bool
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("open current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter netns %s: %w", path, err)}
			return
		}
		res := result{goexit: true} // cleared when fn returns or panics
		defer func() {
			// Runs on return, panic (recovered below) and Goexit. Hand
			// the thread back only if it is back home; otherwise it
			// stays locked and dies with this goroutine.
			if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
				runtime.UnlockOSThread()
			} else if res.err == nil && !res.goexit && res.panic == nil {
				res.err = fmt.Errorf("return from netns %s: %w", path, err)
			}
			done <- res
		}()
		func() {
			defer func() {
				if p := recover(); p != nil {
					res.panic, res.goexit = p, false
				}
			}()
			res.err = fn()
			res.goexit = false
		}()
	}()
	res := <-done
	if res.panic != nil {
		panic(res.panic)
	}
	if res.goexit {
		runtime.Goexit()
	}
	return res.err
}
