package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	moatns "github.com/moatnet/moat/internal/netns"
)

// netnsCreate makes a named network namespace at path the way `ip netns add`
// does: a fresh netns bind-mounted onto a file under a shared-propagation
// directory. The caller's thread never changes namespace: the work happens on
// a dedicated, locked OS thread that Go terminates when it is done.
func netnsCreate(path string) error {
	if err := netnsPrepareDir(filepath.Dir(path)); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close netns file %s: %w", path, err)
	}
	errc := make(chan error, 1)
	go func() {
		// The thread enters the new netns, bind-mounts it, and goes back to
		// the netns it came from. Only a thread that made it back is handed
		// back to the scheduler; one that could not return exits with its
		// goroutine (a locked goroutine that exits takes its thread along),
		// so no other goroutine ever runs in the pod's netns by accident.
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		mountErr := unix.Mount(src, path, "none", unix.MS_BIND, "")
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(mountErr, fmt.Errorf("return to the original netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		if mountErr != nil {
			errc <- fmt.Errorf("bind mount netns onto %s: %w", path, mountErr)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// netnsPrepareDir creates dir and makes it a shared mount point, like
// iproute2, so that unmounting a netns there propagates to mount namespaces
// created later (otherwise a copy of the bind mount keeps the netns alive).
func netnsPrepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create netns dir %s: %w", dir, err)
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself, then share it.
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount netns dir %s: %w", dir, err)
		}
		err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make netns dir %s shared: %w", dir, err)
	}
	return nil
}

// netnsIsMounted reports whether path is a live netns bind mount (as opposed
// to a stale file left behind by a crash, or no file at all).
func netnsIsMounted(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

// netnsDelete unmounts and removes a named netns. A missing or unmounted file
// is not an error. The netns itself disappears once nothing else holds it
// (processes, open fds, sockets).
func netnsDelete(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns file %s: %w", path, err)
	}
	return nil
}

// netnsDo runs fn inside the netns at path: see internal/netns.Do, the one
// implementation production code and tests share.
func netnsDo(path string, fn func() error) error {
	return moatns.Do(path, fn)
}
