package main

// upstream.go owns the bench's DNS server: a real miekg/dns server,
// authoritative for bench.test., that runs inside the server endpoint's
// netns.

import (
	"context"
	"errors"
	"hash/fnv"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// upstream answers A and AAAA for every name under zone with ips addresses
// from 198.18.0.0/16 (IPv4) and fd00:6d6f:6174::/48 (IPv6), chosen by a
// hash of the name and the name's current rotation period (each name's
// periods start at its own phase), TTL ttl; NXDOMAIN
// outside the zone; NOERROR with no answer for other types.
type upstream struct {
	ips     int
	ttl     uint32
	rotate  time.Duration
	now     func() time.Time
	queries atomic.Uint64
}

func (u *upstream) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	u.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	if !strings.HasSuffix(name, "."+zone) {
		m.Rcode = dns.RcodeNameError
		_ = w.WriteMsg(m)
		return
	}
	for _, ip := range u.answer(name, q.Qtype) {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: u.ttl}
		if ip.Is4() {
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: ip.AsSlice()})
		} else {
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
		}
	}
	_ = w.WriteMsg(m)
}

// answer is the addresses of name for qtype now.
func (u *upstream) answer(name string, qtype uint16) []netip.Addr {
	if qtype != dns.TypeA && qtype != dns.TypeAAAA {
		return nil
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	var epoch int64
	if u.rotate > 0 {
		// Each name rotates at its own phase, so that the cache churns
		// steadily rather than all at once.
		phase := int64(h.Sum64() % uint64(u.rotate))
		epoch = (u.now().UnixNano() + phase) / int64(u.rotate)
	}
	out := make([]netip.Addr, 0, u.ips)
	for k := range u.ips {
		h := fnv.New64a()
		_, _ = h.Write([]byte(name))
		var b [9]byte
		for i := range 8 {
			b[i] = byte(epoch >> (8 * i))
		}
		b[8] = byte(k)
		_, _ = h.Write(b[:])
		v := h.Sum64()
		if qtype == dns.TypeA {
			out = append(out, netip.AddrFrom4([4]byte{198, 18, byte(v >> 8), byte(v)}))
			continue
		}
		a := [16]byte{0xfd, 0x00, 0x6d, 0x6f, 0x61, 0x74}
		for i := range 8 {
			a[6+i] = byte(v >> (8 * i))
		}
		a[15] = byte(k)
		out = append(out, netip.AddrFrom16(a))
	}
	return out
}

// server is the running upstream: UDP sockets (SO_REUSEPORT, one server
// each) and a TCP listener, bound inside a netns.
type server struct {
	srvs []*dns.Server
	wg   sync.WaitGroup
}

// serveUpstream binds port 53 inside the netns that do enters and serves
// h on udpSockets UDP sockets and one TCP listener.
func serveUpstream(do func(func() error) error, addr netip.Addr, h dns.Handler, udpSockets int) (*server, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	var pcs []net.PacketConn
	var ln net.Listener
	ap := netip.AddrPortFrom(addr, 53).String()
	err := do(func() error {
		for range udpSockets {
			pc, err := lc.ListenPacket(context.Background(), "udp4", ap)
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		var err error
		ln, err = lc.Listen(context.Background(), "tcp4", ap)
		return err
	})
	if err != nil {
		for _, pc := range pcs {
			_ = pc.Close()
		}
		if ln != nil {
			_ = ln.Close()
		}
		return nil, err
	}
	s := &server{}
	for _, pc := range pcs {
		s.srvs = append(s.srvs, &dns.Server{PacketConn: pc, Handler: h, UDPSize: 4096})
	}
	s.srvs = append(s.srvs, &dns.Server{Listener: ln, Handler: h})
	for _, srv := range s.srvs {
		s.wg.Go(func() { _ = srv.ActivateAndServe() })
	}
	return s, nil
}

// Close stops every server and waits for them.
func (s *server) Close() error {
	var errs []error
	for _, srv := range s.srvs {
		if err := srv.Shutdown(); err != nil && !strings.Contains(err.Error(), "not started") {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}
