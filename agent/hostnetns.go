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
// process's main thread, and a goroutine that exits while locked to a thread
// inside a pod's netns (after a failed return to the host netns) can wedge
// the main thread there; host-side work (per-veth forwarding sysctls, proxy
// routing) would then go to the pod. The e2e suite once caught exactly that.
// A descriptor taken before any pod netns exists does not move.
func pinHostNetns() (*os.File, string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, "", fmt.Errorf("open host netns: %w", err)
	}
	return f, fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd()), nil
}
