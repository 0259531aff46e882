package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// KeepForwarding keeps IPv4 forwarding on for the interfaces that names
// returns, in the calling thread's netns, until ctx is done.
//
// Why: a flow's first packets between local endpoints are routed by the
// host, which forwards only what arrives on an interface with forwarding
// on; the endpoint manager turns it on per host veth. Any write that
// changes net.ipv4.ip_forward (or conf/all/forwarding), by any program on
// the node (a cluster's set-up that sets it to 1 and reverts it to 0 at
// stop, say), sets every interface's flag to the new value. Flows already
// tracked then go on (local delivery skips the host's routing), but every
// new flow, and every tracked one right after a map change, is dropped by
// the host until the flag is back: a new ping gets no reply while an
// established one keeps answering. The kernel announces each such change
// (RTM_NEWNETCONF); KeepForwarding turns the flags back on when it does,
// and once at start.
func KeepForwarding(ctx context.Context, names func() []string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink socket for forwarding changes: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.RTNLGRP_IPV4_NETCONF - 1)}); err != nil {
		return fmt.Errorf("subscribe to forwarding changes: %w", err)
	}
	// A bounded read lets the loop see ctx end.
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("set netlink read timeout: %w", err)
	}
	restore := func() {
		for _, name := range names() {
			restored, err := ensureForwarding(name)
			if err != nil {
				log.Warn("re-enable forwarding failed", "interface", name, "err", err)
				continue
			}
			if restored {
				log.Warn("forwarding was switched off on an endpoint's host interface (a host-wide ip_forward change); switched back on", "interface", name)
			}
		}
	}
	restore()
	buf := make([]byte, 1<<16)
	for ctx.Err() == nil {
		_, _, err := unix.Recvfrom(fd, buf, 0)
		switch {
		case err == nil, errors.Is(err, unix.ENOBUFS): // ENOBUFS: notifications lost; look anyway
			restore()
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		default:
			return fmt.Errorf("read forwarding changes: %w", err)
		}
	}
	return nil
}

// ensureForwarding turns IPv4 forwarding on for ifname; restored says it
// was off. A missing interface (gone meanwhile) is not an error.
func ensureForwarding(ifname string) (restored bool, err error) {
	path := "/proc/sys/net/ipv4/conf/" + ifname + "/forwarding"
	cur, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	if strings.TrimSpace(string(cur)) == "1" {
		return false, nil
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}

// KeepForwarding keeps forwarding on for the host veths of the manager's
// endpoints (see the function KeepForwarding) until ctx is done.
func (m *EndpointManager) KeepForwarding(ctx context.Context, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	names := func() []string {
		links, err := m.List(ctx)
		if err != nil {
			log.Warn("list endpoints to keep their forwarding on", "err", err)
			return nil
		}
		out := make([]string, 0, len(links))
		for _, l := range links {
			out = append(out, l.HostIfname)
		}
		return out
	}
	return netnsDo(m.hostNsPath, func() error { return KeepForwarding(ctx, names, log) })
}
