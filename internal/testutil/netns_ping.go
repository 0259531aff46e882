package testutil

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// ErrNoReply is a Recv or Ping that got no echo reply before its deadline.
var ErrNoReply = errors.New("no echo reply")

// Pinger sends ICMP echo requests from inside a netns over a raw socket
// (root only; the ping binary is not needed). One goroutine may Send while
// another Recvs.
//
// Every raw ICMP socket of a netns gets a copy of every ICMP packet the
// netns receives, so a socket filter lets the kernel queue only this
// pinger's echo replies: otherwise another pinger's traffic fills the
// socket's receive buffer while it is not read (a pinger just opened, a
// reader not yet scheduled on a loaded host) and the kernel drops this
// pinger's own reply, which then looks like a lost packet.
type Pinger struct {
	conn net.PacketConn
	id   uint16
	seq  atomic.Uint32
	// Payload is the echo data size in bytes (8 when 0); set it before the
	// first Send. Above the MTU, the kernel sends the request in fragments.
	Payload int
}

// testHookBeforeFilter, when set by a test, runs between the socket's
// creation and its filter.
var testHookBeforeFilter func()

// pingerIDs hands out echo identifiers, so that concurrent pingers in one
// netns never take each other's replies.
var pingerIDs atomic.Uint32

// OpenPinger opens a raw ICMPv4 socket inside a netns: do runs its function
// there (Pod.Do, an endpoint manager's Do, ...). Close it when done.
func OpenPinger(do func(func() error) error) (*Pinger, error) {
	var pg *Pinger
	err := do(func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return fmt.Errorf("open raw icmp socket: %w", err)
		}
		id := uint16(pingerIDs.Add(1) + uint32(os.Getpid()))
		if testHookBeforeFilter != nil {
			testHookBeforeFilter()
		}
		if err := filterEchoReplies(c.(*net.IPConn), id); err != nil {
			c.Close()
			return err
		}
		pg = &Pinger{conn: c, id: id}
		return nil
	})
	return pg, err
}

// NewPinger opens a pinger in the pod's netns.
func (p *Pod) NewPinger() (*Pinger, error) { return OpenPinger(p.Do) }

// Close closes the socket.
func (pg *Pinger) Close() error { return pg.conn.Close() }

// Send sends one echo request with sequence number seq.
func (pg *Pinger) Send(dst netip.Addr, seq uint16) error {
	msg := make([]byte, 8+max(pg.Payload, 8))
	msg[0] = 8 // echo request
	binary.BigEndian.PutUint16(msg[4:], pg.id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[8:], "moattest")
	binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
	if _, err := pg.conn.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("send echo request to %s: %w", dst, err)
	}
	return nil
}

// Recv returns the sequence number of the next echo reply from dst to this
// pinger, or ErrNoReply at the deadline.
func (pg *Pinger) Recv(dst netip.Addr, deadline time.Time) (uint16, error) {
	if err := pg.conn.SetReadDeadline(deadline); err != nil {
		return 0, fmt.Errorf("set deadline: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := pg.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, ErrNoReply
			}
			return 0, fmt.Errorf("read echo reply: %w", err)
		}
		if n < 8 || buf[0] != 0 {
			continue
		}
		if ip, ok := from.(*net.IPAddr); !ok || !ip.IP.Equal(dst.AsSlice()) {
			continue
		}
		if binary.BigEndian.Uint16(buf[4:]) == pg.id {
			return binary.BigEndian.Uint16(buf[6:]), nil
		}
	}
}

// Ping sends one echo request to dst and waits up to timeout for its reply.
func (pg *Pinger) Ping(dst netip.Addr, timeout time.Duration) error {
	seq := uint16(pg.seq.Add(1))
	if err := pg.Send(dst, seq); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		got, err := pg.Recv(dst, deadline)
		if errors.Is(err, ErrNoReply) {
			return fmt.Errorf("no echo reply from %s within %v: %w", dst, timeout, err)
		}
		if err != nil || got == seq {
			return err
		}
	}
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// filterEchoReplies attaches a classic BPF socket filter to a raw ICMPv4
// socket that keeps only echo replies with identifier id, then drops what
// the socket queued before (a raw socket receives from its creation on: on
// a loaded host the other pingers' replies can fill its buffer before the
// filter is in place). A raw socket's filter sees the packet from its IP
// header on.
func filterEchoReplies(c *net.IPConn, id uint16) error {
	const (
		ldxMSH = syscall.BPF_LDX | syscall.BPF_B | syscall.BPF_MSH // X = 4 * (pkt[k] & 0xf): the IP header length
		ldbInd = syscall.BPF_LD | syscall.BPF_B | syscall.BPF_IND  // A = pkt[X + k]
		ldhInd = syscall.BPF_LD | syscall.BPF_H | syscall.BPF_IND  // A = pkt[X + k : 2]
		jeq    = syscall.BPF_JMP | syscall.BPF_JEQ | syscall.BPF_K
		ret    = syscall.BPF_RET | syscall.BPF_K
	)
	prog := []syscall.SockFilter{
		{Code: ldxMSH, K: 0},
		{Code: ldbInd, K: 0},            // ICMP type
		{Code: jeq, Jt: 0, Jf: 3, K: 0}, // echo reply?
		{Code: ldhInd, K: 4},            // identifier
		{Code: jeq, Jt: 0, Jf: 1, K: uint32(id)},
		{Code: ret, K: 0xffff}, // keep the packet
		{Code: ret, K: 0},      // drop it
	}
	fprog := syscall.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("filter echo replies: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, _, errno := syscall.Syscall6(syscall.SYS_SETSOCKOPT, fd, syscall.SOL_SOCKET, syscall.SO_ATTACH_FILTER,
			uintptr(unsafe.Pointer(&fprog)), unsafe.Sizeof(fprog), 0)
		if errno != 0 {
			serr = errno
		}
	}); err != nil {
		return fmt.Errorf("filter echo replies: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("filter echo replies: attach socket filter: %w", serr)
	}
	buf := make([]byte, 1500)
	if err := rc.Read(func(fd uintptr) bool {
		for {
			if _, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT); err != nil {
				serr = err
				return true // EAGAIN: the queue is empty
			}
		}
	}); err != nil {
		return fmt.Errorf("filter echo replies: drain: %w", err)
	}
	if !errors.Is(serr, syscall.EAGAIN) {
		return fmt.Errorf("filter echo replies: drain: %w", serr)
	}
	return nil
}
