package testutil

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Pinger sends ICMP echo requests from inside a netns over a raw socket
// (root only; the ping binary is not needed).
type Pinger struct {
	conn net.PacketConn
	id   uint16
	seq  uint16
}

// NewPinger opens a raw ICMPv4 socket in the pod's netns. Close it when done.
func (p *Pod) NewPinger() (*Pinger, error) {
	var pg *Pinger
	err := p.Do(func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return fmt.Errorf("open raw icmp socket: %w", err)
		}
		pg = &Pinger{conn: c, id: uint16(time.Now().UnixNano())}
		return nil
	})
	return pg, err
}

// Close closes the socket.
func (pg *Pinger) Close() error { return pg.conn.Close() }

// Ping sends one echo request to dst and waits up to timeout for its reply.
func (pg *Pinger) Ping(dst netip.Addr, timeout time.Duration) error {
	pg.seq++
	msg := make([]byte, 16)
	msg[0] = 8 // echo request
	binary.BigEndian.PutUint16(msg[4:], pg.id)
	binary.BigEndian.PutUint16(msg[6:], pg.seq)
	copy(msg[8:], "moattest")
	binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
	if _, err := pg.conn.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("send echo request to %s: %w", dst, err)
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for {
		if err := pg.conn.SetReadDeadline(deadline); err != nil {
			return fmt.Errorf("set deadline: %w", err)
		}
		n, from, err := pg.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("no echo reply from %s within %v", dst, timeout)
			}
			return fmt.Errorf("read echo reply: %w", err)
		}
		if n < 8 || buf[0] != 0 {
			continue
		}
		if ip, ok := from.(*net.IPAddr); !ok || !ip.IP.Equal(dst.AsSlice()) {
			continue
		}
		if binary.BigEndian.Uint16(buf[4:]) == pg.id && binary.BigEndian.Uint16(buf[6:]) == pg.seq {
			return nil
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
