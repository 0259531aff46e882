package dnsproxy

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// upstream_udp.go owns the sockets UDP queries leave by. By default each
// query has its own socket, so its source port is as fresh and random as
// its ID (an off-path forger must guess both). That costs about ten
// system calls per query (open, mark, bind, register with the poller, and
// back). Config.UpstreamSocketQueries > 1 trades port entropy for
// throughput: queries with the same mark (the source identity's) and
// address family then share a socket, each with an ID no other query in
// flight on it has, and one reader per socket hands each answer to the
// query whose ID it carries, which checks source, ID and question as
// before. A shared socket is retired after that many queries (the source
// port keeps changing) and closed with its last query; sockets idle for
// socketIdle are closed by Run's collector.

const socketIdle = time.Minute

type udpKey struct {
	mark    uint32
	setMark bool
	v6      bool
}

// udpSockets are a Proxy's shared upstream sockets.
type udpSockets struct {
	p      *Proxy
	mu     sync.Mutex
	socks  map[udpKey]*udpSock
	closed bool
}

type udpSock struct {
	p    *Proxy
	conn *net.UDPConn

	mu       sync.Mutex
	waiting  map[uint16]chan udpPacket
	sent     int
	retired  bool
	lastUsed time.Time
	closed   bool
}

type udpPacket struct {
	b    []byte
	from netip.AddrPort
}

// take returns a socket for key with id registered on it: the answers
// carrying id are sent to the returned channel until release.
func (u *udpSockets) take(ctx context.Context, key udpKey, control func(string, string, syscall.RawConn) error) (*udpSock, uint16, chan udpPacket, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, 0, nil, net.ErrClosed
	}
	s := u.socks[key]
	if s == nil || s.isRetired() {
		local, netw := "0.0.0.0:0", "udp4"
		if key.v6 {
			local, netw = "[::]:0", "udp6"
		}
		lc := net.ListenConfig{Control: control}
		pc, err := lc.ListenPacket(ctx, netw, local)
		if err != nil {
			return nil, 0, nil, err
		}
		s = &udpSock{p: u.p, conn: pc.(*net.UDPConn), waiting: map[uint16]chan udpPacket{}}
		u.socks[key] = s
		go s.read()
	}
	id, ch := s.register()
	return s, id, ch, nil
}

func (s *udpSock) isRetired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.retired
}

// register picks an ID no query in flight on s has.
func (s *udpSock) register() (uint16, chan udpPacket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var id uint16
	for {
		id = uint16(rand.Uint32())
		if _, busy := s.waiting[id]; !busy {
			break
		}
	}
	ch := make(chan udpPacket, 4)
	s.waiting[id] = ch
	s.sent++
	if s.sent >= s.p.cfg.UpstreamSocketQueries {
		s.retired = true
	}
	s.lastUsed = time.Now()
	return id, ch
}

// release ends id's wait; a retired socket closes with its last query.
func (s *udpSock) release(id uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.waiting, id)
	if s.retired && len(s.waiting) == 0 {
		s.closeLocked()
	}
}

func (s *udpSock) closeLocked() {
	if !s.closed {
		s.closed = true
		_ = s.conn.Close()
	}
}

// read hands each datagram to the query whose ID it carries; a datagram
// no query waits for is counted and dropped.
func (s *udpSock) read() {
	buf := make([]byte, dns.MaxMsgSize)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errClosed(err) {
				return
			}
			continue
		}
		if n < 2 {
			s.p.m.reject(ReasonRespMalformed, resultDrop)
			continue
		}
		s.mu.Lock()
		ch := s.waiting[binary.BigEndian.Uint16(buf)]
		s.mu.Unlock()
		if ch == nil {
			s.p.m.reject(ReasonRespID, resultDrop)
			continue
		}
		select {
		case ch <- udpPacket{b: append([]byte(nil), buf[:n]...), from: from}:
		default: // the query has four unread datagrams already
			s.p.m.reject(ReasonRespID, resultDrop)
		}
	}
}

// sweep closes sockets idle since before idleSince, and, with all, every
// socket (the proxy stops).
func (u *udpSockets) sweep(idleSince time.Time, all bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if all {
		u.closed = true
	}
	for k, s := range u.socks {
		s.mu.Lock()
		if all || len(s.waiting) == 0 && s.lastUsed.Before(idleSince) {
			s.retired = true
			if len(s.waiting) == 0 || all {
				s.closeLocked()
			}
			delete(u.socks, k)
		}
		s.mu.Unlock()
	}
}

// exchangeUDP sends wire, setting its ID, from a fresh socket or (with
// UpstreamSocketQueries > 1) a shared one, and waits for the first
// datagram checkResponse accepts; others are counted and ignored.
func (p *Proxy) exchangeUDP(ctx context.Context, wire []byte, server netip.AddrPort, q dns.Question, key udpKey, control func(string, string, syscall.RawConn) error) (*dns.Msg, []byte, string) {
	if p.cfg.UpstreamSocketQueries <= 1 {
		id := uint16(rand.Uint32())
		binary.BigEndian.PutUint16(wire, id)
		return p.exchangeUDPFresh(ctx, wire, server, id, q, control)
	}
	s, id, ch, err := p.udp4or6.take(ctx, key, control)
	if err != nil {
		return nil, nil, upstreamReason(err)
	}
	defer s.release(id)
	binary.BigEndian.PutUint16(wire, id)
	if _, err := s.conn.WriteToUDPAddrPort(wire, server); err != nil {
		return nil, nil, upstreamReason(err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil, nil, upstreamReason(ctx.Err())
		case pkt := <-ch:
			m, reason := checkResponse(pkt.b, pkt.from, server, id, q)
			if reason != "" {
				p.m.reject(reason, resultDrop)
				continue
			}
			return m, pkt.b, ""
		}
	}
}

// exchangeUDPFresh sends wire from a fresh socket and waits for the first
// packet checkResponse accepts; others are counted and ignored.
func (p *Proxy) exchangeUDPFresh(ctx context.Context, wire []byte, server netip.AddrPort, id uint16, q dns.Question, control func(string, string, syscall.RawConn) error) (*dns.Msg, []byte, string) {
	lc := net.ListenConfig{Control: control}
	local := "0.0.0.0:0"
	if network("udp", server) == "udp6" {
		local = "[::]:0"
	}
	pc, err := lc.ListenPacket(ctx, network("udp", server), local)
	if err != nil {
		return nil, nil, upstreamReason(err)
	}
	c := pc.(*net.UDPConn)
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.WriteToUDPAddrPort(wire, server); err != nil {
		return nil, nil, upstreamReason(err)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil, nil, upstreamReason(err)
		}
		m, reason := checkResponse(buf[:n], from, server, id, q)
		if reason != "" {
			p.m.reject(reason, resultDrop)
			continue
		}
		return m, append([]byte(nil), buf[:n]...), ""
	}
}
