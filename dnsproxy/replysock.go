package dnsproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// replysock.go keeps the sockets transparent answers leave from: one per
// original server address (usually a handful: the cluster's DNS servers),
// transparent, bound to that address with SO_REUSEADDR, and made deaf by a
// socket filter that drops every packet, so that they only ever send. That
// saves opening, binding and closing a socket for every answer. sendFrom's
// one-shot sockets (connected to the client) remain for servers past
// maxReplySockets and for a server port the proxy itself listens on: a
// query delivered without the datapath's socket assignment would be looked
// up by address and find the more specific reply socket instead of the
// listener. (The agent's listeners are on their own port and every
// redirected packet is assigned its socket, so there it never happens.)

const maxReplySockets = 1024

type replySockets struct {
	mu     sync.Mutex
	fds    map[netip.AddrPort]int
	closed bool
	// listenPorts are the proxy's own ports.
	listenPorts map[uint16]bool
}

// dropAll is a classic BPF socket filter that accepts nothing.
var dropAll = []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}

// send sends b to client from the address from.
func (r *replySockets) send(from, client netip.AddrPort, b []byte) error {
	fd, family, err := r.get(from)
	if err != nil {
		return err
	}
	if fd < 0 {
		return sendFrom(from, client, b)
	}
	if err := unix.Sendto(fd, b, 0, sockaddr(client, family)); err != nil {
		return fmt.Errorf("send reply from %s to %s: %w", from, client, err)
	}
	return nil
}

// get returns from's socket (-1: none, use a one-shot one).
func (r *replySockets) get(from netip.AddrPort) (int, int, error) {
	family, network := unix.AF_INET, "udp4"
	if from.Addr().Is6() && !from.Addr().Is4In6() {
		family, network = unix.AF_INET6, "udp6"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if fd, ok := r.fds[from]; ok {
		return fd, family, nil
	}
	if r.closed || len(r.fds) >= maxReplySockets || r.listenPorts[from.Port()] {
		return -1, family, nil
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return 0, 0, fmt.Errorf("open reply socket: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(dropAll)), Filter: &dropAll[0]}
	if err := errors.Join(setTransparent(fd, network),
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1),
		unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)); err != nil {
		unix.Close(fd)
		return 0, 0, fmt.Errorf("set up reply socket for %s (needs CAP_NET_ADMIN): %w", from, err)
	}
	if err := unix.Bind(fd, sockaddr(from, family)); err != nil {
		unix.Close(fd)
		return 0, 0, fmt.Errorf("bind reply socket to %s: %w", from, err)
	}
	if r.fds == nil {
		r.fds = map[netip.AddrPort]int{}
	}
	r.fds[from] = fd
	return fd, family, nil
}

// close closes every socket; later sends use one-shot sockets.
func (r *replySockets) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for k, fd := range r.fds {
		unix.Close(fd)
		delete(r.fds, k)
	}
}
