package agent

import (
	"fmt"
	"os"
	"runtime"
)

// pinHostNetns opens the agent's own (host) network namespace and returns
// the file and a path that names that namespace for as long as the file
// stays open. The endpoint manager gets the path as its HostNetns.
//
// Why not the manager's default, /proc/<pid>/ns/net: that path follows the
// process's main thread, and when a goroutine exits while locked to the main
// thread Go does not end the thread but wedges it, in whatever namespace it
// is in. datapath's netns creation leaves its locked thread inside the new
// pod netns on purpose; when the scheduler ran it on the main thread,
// /proc/<pid>/ns/net named that pod from then on, and host-side work
// (per-veth forwarding sysctls, proxy routing) went to the pod and failed
// ("write sysctl net/ipv4/conf/lxc…/forwarding: no such file or directory",
// on every reconcile). A descriptor taken before any netns exists does not
// move.
func pinHostNetns() (*os.File, string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, "", fmt.Errorf("open host netns: %w", err)
	}
	return f, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd()), nil
}
