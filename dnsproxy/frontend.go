package dnsproxy

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/policy"
)

// frontend.go owns the client side: reading datagrams (with their original
// destination) and TCP connections, and writing answers back so that they
// come from the original server's address.

// ReasonNoOrigDst counts datagrams on a transparent socket that carried no
// original destination (they cannot be forwarded anywhere): dropped.
const ReasonNoOrigDst = "no_original_destination"

func (p *Proxy) serveUDP(ctx context.Context, c *net.UDPConn, wg *sync.WaitGroup) {
	buf := make([]byte, dns.MaxMsgSize)
	oob := make([]byte, oobSize)
	for {
		n, oobn, _, from, err := c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errClosed(err) || ctx.Err() != nil {
				return
			}
			p.cfg.Logger.Warn("dns proxy: udp read", "error", err)
			continue
		}
		server := p.cfg.StaticDestination
		if p.cfg.Transparent {
			var ok bool
			if server, ok = origDst(oob[:oobn]); !ok {
				p.m.reject(ReasonNoOrigDst, resultDrop)
				continue
			}
		}
		q := &query{raw: append([]byte(nil), buf[:n]...), client: from, server: server, proto: policy.ProtoUDP, start: time.Now()}
		wg.Go(func() {
			resp := p.handle(ctx, q)
			if resp != nil {
				p.writeUDP(c, q, resp)
			}
		})
	}
}

// writeUDP sends resp, truncated to what the client takes over UDP.
func (p *Proxy) writeUDP(c *net.UDPConn, q *query, resp *dns.Msg) {
	b := q.rawReply
	if b == nil || len(b) > q.udpSize {
		resp.Truncate(q.udpSize)
		var err error
		if b, err = resp.Pack(); err != nil {
			p.m.reject(ReasonReplyTooLarge, resultDrop)
			return
		}
	}
	var err error
	if p.cfg.Transparent {
		err = p.replies.send(q.server, q.client, b)
	} else {
		_, err = c.WriteToUDPAddrPort(b, q.client)
	}
	if err != nil {
		p.cfg.Logger.Warn("dns proxy: udp reply", "client", q.client.String(), "error", err)
	}
}

func (p *Proxy) serveTCP(ctx context.Context, l *net.TCPListener, wg *sync.WaitGroup) {
	for {
		conn, err := l.AcceptTCP()
		if err != nil {
			if errClosed(err) || ctx.Err() != nil {
				return
			}
			p.cfg.Logger.Warn("dns proxy: tcp accept", "error", err)
			continue
		}
		select {
		case p.tcpSem <- struct{}{}:
		default:
			p.m.reject(ReasonTooManyTCP, resultDrop)
			_ = conn.Close()
			continue
		}
		wg.Go(func() {
			defer func() { <-p.tcpSem }()
			p.serveTCPConn(ctx, conn)
		})
	}
}

// serveTCPConn answers the queries of one connection in order.
func (p *Proxy) serveTCPConn(ctx context.Context, conn *net.TCPConn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	server := p.cfg.StaticDestination
	if p.cfg.Transparent {
		// The datapath assigned the connection to this socket; its local
		// address is the one the client dialled.
		server = addrPort(conn.LocalAddr())
	}
	client := addrPort(conn.RemoteAddr())
	buf := make([]byte, dns.MaxMsgSize)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(p.cfg.TCPIdleTimeout))
		raw, err := readTCPMsg(conn, buf)
		if err != nil {
			return
		}
		q := &query{raw: append([]byte(nil), raw...), client: client, server: netip.AddrPortFrom(server.Addr().Unmap(), server.Port()), proto: policy.ProtoTCP, start: time.Now()}
		resp := p.handle(ctx, q)
		if resp == nil {
			continue
		}
		b := q.rawReply
		if b == nil {
			if b, err = resp.Pack(); err != nil {
				p.m.reject(ReasonReplyTooLarge, resultDrop)
				return
			}
		}
		out := make([]byte, 2+len(b))
		binary.BigEndian.PutUint16(out, uint16(len(b)))
		copy(out[2:], b)
		_ = conn.SetWriteDeadline(time.Now().Add(p.cfg.TCPIdleTimeout))
		if _, err := conn.Write(out); err != nil {
			return
		}
	}
}
