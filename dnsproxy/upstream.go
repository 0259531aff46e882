package dnsproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/policy"
)

// upstream.go owns the exchange with the original server: a fresh socket
// per query (kernel-chosen random source port) carrying the source
// identity's mark, a fresh random transaction ID, the client's EDNS0 OPT
// kept, TCP after a truncated UDP answer, and the acceptance rules of
// check.go for every packet that comes back. It also owns the hold: the
// answer's selected names are learned and OnLearn runs before the answer
// is released.

// exchange is the state of one allowed query.
type exchange struct {
	q      *query
	req    *dns.Msg
	ep     EndpointInfo
	remote policy.ID

	upstreamTime time.Duration
	holdTime     time.Duration
	chain        chainResult
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, dns.MaxMsgSize); return &b }}

// forward sends x's query to the original server and returns the answer
// for the client (SERVFAIL when there is none).
func (p *Proxy) forward(ctx context.Context, x *exchange) *dns.Msg {
	pn := protoName(x.q.proto)
	servfail := func(reason string) *dns.Msg {
		p.m.reject(reason, resultServFail)
		return errorReply(nil, x.req, dns.RcodeServerFailure)
	}
	var mark uint32
	if p.cfg.Mark != nil {
		var err error
		if mark, err = p.cfg.Mark(x.ep.Identity); err != nil {
			p.cfg.Logger.Warn("dns proxy: no mark for source identity", "endpoint", x.ep.Key().String(), "identity", x.ep.Identity, "error", err)
			return servfail(ReasonMarkFailed)
		}
	}
	control := markControl(mark, p.cfg.Mark != nil, p.upstreamHook)

	out := &dns.Msg{MsgHdr: x.req.MsgHdr, Question: x.req.Question}
	out.Id = uint16(rand.Uint32())
	onlyOPT := true
	for _, rr := range x.req.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			out.Extra = append(out.Extra, rr)
		} else {
			onlyOPT = false
		}
	}
	var wire []byte
	if onlyOPT && x.req.Len() == len(x.q.raw) {
		// The client's bytes are exactly the parsed message (no
		// compression, nothing trailing): forward them with the new ID.
		wire = append([]byte(nil), x.q.raw...)
		binary.BigEndian.PutUint16(wire, out.Id)
	} else {
		var err error
		if wire, err = out.Pack(); err != nil {
			return servfail(ReasonMalformed)
		}
	}
	uctx, cancel := context.WithTimeout(ctx, p.cfg.UpstreamTimeout)
	defer cancel()
	t0 := time.Now()
	var resp *dns.Msg
	var raw []byte
	var reason string
	if x.q.proto == policy.ProtoUDP {
		key := udpKey{mark: mark, setMark: p.cfg.Mark != nil, v6: network("udp", x.q.server) == "udp6"}
		resp, raw, reason = p.exchangeUDP(uctx, wire, x.q.server, out.Question[0], key, control)
		if resp != nil && resp.Truncated {
			resp, raw, reason = p.exchangeTCP(uctx, wire, x.q.server, binary.BigEndian.Uint16(wire), out.Question[0], control)
		}
	} else {
		resp, raw, reason = p.exchangeTCP(uctx, wire, x.q.server, out.Id, out.Question[0], control)
	}
	x.upstreamTime = time.Since(t0)
	p.m.upstreamBy[pn].Observe(x.upstreamTime.Seconds())
	if resp == nil {
		return servfail(reason)
	}
	return p.finishAnswer(ctx, x, resp, raw)
}

// finishAnswer turns an accepted upstream answer into the client's: records
// outside the CNAME chain removed, selected names learned (the hold), the
// client's ID and question spelling restored. raw, the answer's bytes, is
// relayed as is (with the client's ID) when nothing had to change.
func (p *Proxy) finishAnswer(ctx context.Context, x *exchange, resp *dns.Msg, raw []byte) *dns.Msg {
	q := x.req.Question[0]
	x.chain = followChain(resp, q.Name, q.Qtype)
	if x.chain.outOfChain > 0 {
		p.m.rejected.WithLabelValues(ReasonRespOutOfChain, resultStripped).Add(float64(x.chain.outOfChain))
	} else if raw != nil && len(resp.Question) == 1 && resp.Question[0].Name == q.Name {
		binary.BigEndian.PutUint16(raw, x.req.Id)
		x.q.rawReply = raw
	}
	p.hold(ctx, x)
	resp.Id = x.req.Id
	resp.Question = x.req.Question
	resp.Compress = true
	return resp
}

// exchangeTCP sends wire over a fresh TCP connection and reads answers
// until one is accepted.
func (p *Proxy) exchangeTCP(ctx context.Context, wire []byte, server netip.AddrPort, id uint16, q dns.Question, control func(string, string, syscall.RawConn) error) (*dns.Msg, []byte, string) {
	d := net.Dialer{Control: control}
	conn, err := d.DialContext(ctx, network("tcp", server), server.String())
	if err != nil {
		return nil, nil, upstreamReason(err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	msg := make([]byte, 2+len(wire))
	binary.BigEndian.PutUint16(msg, uint16(len(wire)))
	copy(msg[2:], wire)
	if _, err := conn.Write(msg); err != nil {
		return nil, nil, upstreamReason(err)
	}
	peer := addrPort(conn.RemoteAddr())
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		b, err := readTCPMsg(conn, buf)
		if err != nil {
			return nil, nil, upstreamReason(err)
		}
		m, reason := checkResponse(b, peer, server, id, q)
		if reason != "" {
			p.m.reject(reason, resultDrop)
			continue
		}
		return m, append([]byte(nil), b...), ""
	}
}

// readTCPMsg reads one length-prefixed message into buf (64 KiB).
func readTCPMsg(r io.Reader, buf []byte) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func upstreamReason(err error) string {
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return ReasonUpstreamTimeout
	}
	var me *markError
	if errors.As(err, &me) {
		return ReasonMarkFailed
	}
	return ReasonUpstreamError
}

// hold learns the answer's addresses for the chain's selected names and
// waits, at most HoldTimeout, for OnLearn to put them in the ipcache.
func (p *Proxy) hold(ctx context.Context, x *exchange) {
	cp := p.pol.Load()
	if cp == nil || len(x.chain.ips) == 0 {
		return
	}
	type learn struct {
		name string
		sels []policy.FQDNSelection
	}
	var todo []learn
	for _, name := range x.chain.names {
		if sels := cp.selectorsFor(name); len(sels) > 0 {
			p.cache.Learn(name, x.chain.ips)
			todo = append(todo, learn{name, sels})
		}
	}
	if len(todo) == 0 {
		return
	}
	for _, l := range todo {
		p.journal(l.name, x.chain.ips)
	}
	if p.cfg.OnLearn == nil {
		return
	}
	ips := make([]netip.Addr, len(x.chain.ips))
	for i, l := range x.chain.ips {
		ips[i] = l.IP
	}
	start := time.Now()
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.HoldTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		var errs []error
		for _, l := range todo {
			if err := p.cfg.OnLearn(hctx, l.name, ips, l.sels); err != nil {
				errs = append(errs, err)
			}
		}
		done <- errors.Join(errs...)
	}()
	select {
	case err := <-done:
		if err != nil {
			p.m.reject(ReasonLearnError, resultReleased)
			p.cfg.Logger.Warn("dns proxy: learning answer failed; released anyway", "name", todo[0].name, "error", err)
		}
	case <-hctx.Done():
		p.m.reject(ReasonHoldTimeout, resultReleased)
	}
	x.holdTime = time.Since(start)
	p.m.hold.Observe(x.holdTime.Seconds())
}
