package dnsproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// sockets.go owns the socket options of the proxy: transparent listeners
// that learn each datagram's original destination, the transparent
// sockets answers leave from (bound to the original server's address), and
// the mark of upstream sockets.

// transparentControl makes a listener IP_TRANSPARENT (and IP_FREEBIND) and,
// for UDP, asks for IP_ORIGDSTADDR control messages.
func transparentControl(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = setTransparent(int(fd), network)
		if serr == nil && (network == "udp4" || network == "udp6") {
			// SO_REUSEADDR lets the one-shot reply sockets (sendFrom) bind
			// to an original destination on the listener's port.
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if network == "udp6" {
				serr = errors.Join(
					unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_RECVORIGDSTADDR, 1),
					unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_RECVORIGDSTADDR, 1))
				return
			}
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_RECVORIGDSTADDR, 1)
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set IP_TRANSPARENT/IP_RECVORIGDSTADDR (needs CAP_NET_ADMIN): %w", serr)
	}
	return nil
}

func setTransparent(fd int, network string) error {
	if network == "udp6" || network == "tcp6" {
		return errors.Join(
			unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1),
			unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_FREEBIND, 1))
	}
	return errors.Join(
		unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1),
		unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1))
}

// origDst reads the original destination from a datagram's control
// messages (IP_ORIGDSTADDR or IPV6_ORIGDSTADDR).
func origDst(oob []byte) (netip.AddrPort, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.AddrPort{}, false
	}
	for _, m := range msgs {
		switch {
		// struct sockaddr_in: family, port (network order), address;
		// sockaddr_in6: family, port, flow info, address.
		case m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_ORIGDSTADDR && len(m.Data) >= unix.SizeofSockaddrInet4:
			port := binary.BigEndian.Uint16(m.Data[2:4])
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Data[4:8])), port), true
		case m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_ORIGDSTADDR && len(m.Data) >= unix.SizeofSockaddrInet6:
			port := binary.BigEndian.Uint16(m.Data[2:4])
			return netip.AddrPortFrom(netip.AddrFrom16([16]byte(m.Data[8:24])).Unmap(), port), true
		}
	}
	return netip.AddrPort{}, false
}

// oobSize fits one IPv6 original-destination control message.
var oobSize = unix.CmsgSpace(unix.SizeofSockaddrInet6)

// sendFrom sends b to client from the address from: a transparent UDP
// socket bound to it (SO_REUSEADDR, so it can share the address with the
// listener and with other replies) and connected to the client, used once.
// This is how an answer appears to come from the original server.
func sendFrom(from, client netip.AddrPort, b []byte) error {
	family := unix.AF_INET
	network := "udp4"
	if from.Addr().Is6() && !from.Addr().Is4In6() {
		family, network = unix.AF_INET6, "udp6"
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return fmt.Errorf("open reply socket: %w", err)
	}
	defer unix.Close(fd)
	if err := errors.Join(setTransparent(fd, network), unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)); err != nil {
		return fmt.Errorf("set reply socket transparent (needs CAP_NET_ADMIN): %w", err)
	}
	if err := unix.Bind(fd, sockaddr(from, family)); err != nil {
		return fmt.Errorf("bind reply socket to %s: %w", from, err)
	}
	// Connected to the client, the socket can only ever match packets
	// of this one client port (never another client's query to the same
	// server) during its microseconds of life.
	if err := unix.Connect(fd, sockaddr(client, family)); err != nil {
		return fmt.Errorf("connect reply socket %s to %s: %w", from, client, err)
	}
	if _, err := unix.Write(fd, b); err != nil {
		return fmt.Errorf("send reply from %s to %s: %w", from, client, err)
	}
	return nil
}

func sockaddr(ap netip.AddrPort, family int) unix.Sockaddr {
	if family == unix.AF_INET6 {
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
}

// markControl returns a Control function that sets SO_MARK to mark and
// then calls hook (tests) with the socket.
func markControl(mark uint32, setMark bool, hook func(fd int)) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if setMark {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
					serr = &markError{mark: mark, err: err}
					return
				}
			}
			if hook != nil {
				hook(int(fd))
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// network returns "udp4"/"tcp4" or the 6 variants for ap.
func network(base string, ap netip.AddrPort) string {
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		return base + "6"
	}
	return base + "4"
}

// addrPort converts a net.Addr of a UDP or TCP socket.
func addrPort(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort()
	case *net.TCPAddr:
		return v.AddrPort()
	}
	return netip.AddrPort{}
}

// markError is a failure to set SO_MARK on an upstream socket.
type markError struct {
	mark uint32
	err  error
}

func (e *markError) Error() string {
	return fmt.Sprintf("set SO_MARK %#x (needs CAP_NET_ADMIN): %v", e.mark, e.err)
}

func (e *markError) Unwrap() error { return e.err }
