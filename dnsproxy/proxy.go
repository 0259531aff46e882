package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/policy"
)

// proxy.go owns the Proxy: its lifecycle, the policy swap, admission
// (concurrency bounds) and the per-query pipeline that the UDP and TCP
// front ends share.

// Proxy is the transparent DNS proxy. Create it with New, give it a policy
// with SetPolicy (before or while it runs), and run it with Run.
type Proxy struct {
	cfg   Config
	m     *metrics
	cache *Cache
	pol   atomic.Pointer[compiledPolicy]

	sem     chan struct{} // global inflight bound
	tcpSem  chan struct{}
	epMu    sync.Mutex
	epCount map[EndpointKey]int

	bindOnce sync.Once
	bindErr  error
	udp      []*net.UDPConn
	tcp      []*net.TCPListener
	// self are the bound listening addresses (UDP and TCP).
	self []netip.AddrPort

	// udp4or6 are the shared upstream UDP sockets (upstream_udp.go).
	udp4or6 *udpSockets
	// replies are the sockets transparent answers leave from.
	replies replySockets

	// upstreamHook, when set (tests), sees every upstream socket.
	upstreamHook func(fd int)
}

// New validates cfg and builds a Proxy; it opens no socket.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c := cfg.Cache
	if c == nil {
		c = NewCache(CacheConfig{InUse: cfg.InUse, OnRelease: cfg.OnRelease, Now: cfg.Now})
	}
	c.mu.Lock()
	c.observer = m
	if c.cfg.InUse == nil {
		c.cfg.InUse = cfg.InUse
	}
	if c.cfg.OnRelease == nil {
		c.cfg.OnRelease = cfg.OnRelease
	}
	c.reportLocked()
	c.mu.Unlock()
	p := &Proxy{
		cfg:     cfg,
		m:       m,
		cache:   c,
		sem:     make(chan struct{}, cfg.MaxInflight),
		tcpSem:  make(chan struct{}, cfg.MaxTCPConns),
		epCount: map[EndpointKey]int{},
	}
	p.udp4or6 = &udpSockets{p: p, socks: map[udpKey]*udpSock{}}
	return p, nil
}

// Cache returns the proxy's FQDN cache.
func (p *Proxy) Cache() *Cache { return p.cache }

// SetPolicy replaces the policy; every query received after it returns is
// judged by the new one. Invalid rules are skipped (they match nothing)
// and reported in the error; the policy is installed either way.
func (p *Proxy) SetPolicy(pol Policy) error {
	cp, err := compilePolicy(pol)
	if cp == nil {
		return err
	}
	p.pol.Store(cp)
	if p.cfg.Store != nil {
		p.cfg.Store.Touch()
	}
	return err
}

// Bind opens the listeners (Run calls it if the caller did not). After it
// returns, Addrs reports the bound addresses.
func (p *Proxy) Bind(ctx context.Context) error {
	p.bindOnce.Do(func() { p.bindErr = p.bind(ctx) })
	return p.bindErr
}

func (p *Proxy) bind(ctx context.Context) error {
	lc := net.ListenConfig{}
	if p.cfg.Transparent {
		lc.Control = transparentControl
	}
	for _, a := range p.cfg.Listen {
		pc, err := lc.ListenPacket(ctx, network("udp", a), a.String())
		if err != nil {
			p.closeSockets()
			return fmt.Errorf("bind dns proxy udp %s: %w", a, err)
		}
		p.udp = append(p.udp, pc.(*net.UDPConn))
		ln, err := lc.Listen(ctx, network("tcp", a), a.String())
		if err != nil {
			p.closeSockets()
			return fmt.Errorf("bind dns proxy tcp %s: %w", a, err)
		}
		p.tcp = append(p.tcp, ln.(*net.TCPListener))
	}
	udp, tcp := p.Addrs()
	p.self = append(udp, tcp...)
	p.replies.mu.Lock()
	p.replies.listenPorts = map[uint16]bool{}
	for _, a := range p.self {
		p.replies.listenPorts[a.Port()] = true
	}
	p.replies.mu.Unlock()
	return nil
}

func (p *Proxy) closeSockets() {
	for _, c := range p.udp {
		_ = c.Close()
	}
	for _, l := range p.tcp {
		_ = l.Close()
	}
}

// Addrs returns the bound UDP and TCP addresses, in Listen order.
func (p *Proxy) Addrs() (udp, tcp []netip.AddrPort) {
	for _, c := range p.udp {
		udp = append(udp, addrPort(c.LocalAddr()))
	}
	for _, l := range p.tcp {
		tcp = append(tcp, addrPort(l.Addr()))
	}
	return udp, tcp
}

// CollectInterval is how often Run collects expired cache entries.
const CollectInterval = 5 * time.Second

// Run serves until ctx ends, then closes the listeners and waits for the
// queries in flight.
func (p *Proxy) Run(ctx context.Context) error {
	if err := p.Bind(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, c := range p.udp {
		for range p.cfg.UDPReaders {
			wg.Go(func() { p.serveUDP(ctx, c, &wg) })
		}
	}
	for _, l := range p.tcp {
		wg.Go(func() { p.serveTCP(ctx, l, &wg) })
	}
	wg.Go(func() {
		t := time.NewTicker(CollectInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p.cache.Collect()
				p.compact(false)
				p.udp4or6.sweep(time.Now().Add(-socketIdle), false)
			}
		}
	})
	<-ctx.Done()
	p.closeSockets()
	wg.Wait()
	p.udp4or6.sweep(time.Time{}, true)
	p.replies.close()
	p.compact(true)
	return nil
}

// query is one query in flight.
type query struct {
	raw    []byte
	client netip.AddrPort
	server netip.AddrPort // original destination
	proto  policy.Protocol
	start  time.Time
	// udpSize is the largest answer the client takes over UDP (512, or
	// its EDNS0 buffer size); set once the query parsed.
	udpSize int
	// rawReply, when set, is the upstream's answer with the client's ID,
	// sent as is when it fits (the message handle returns is equivalent).
	rawReply []byte
}

func protoName(p policy.Protocol) string {
	if p == policy.ProtoTCP {
		return "tcp"
	}
	return "udp"
}

// handle runs one query through the pipeline and returns the message to
// send back (nil: send nothing).
func (p *Proxy) handle(ctx context.Context, q *query) *dns.Msg {
	pn := protoName(q.proto)
	req, prob := checkQuery(q.raw)
	q.udpSize = dns.MinMsgSize
	if req != nil {
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > q.udpSize {
			q.udpSize = int(opt.UDPSize())
		}
	}
	if prob != nil {
		p.m.queries.WithLabelValues(pn, "rejected").Inc()
		p.m.reject(prob.reason, rcodeResult(prob.rcode))
		if prob.rcode == rcodeDrop {
			return nil
		}
		return errorReply(q.raw, req, prob.rcode)
	}
	if p.isSelf(q.server) {
		// Only the datapath's redirect may reach the proxy; a query sent
		// to the proxy's own port would be forwarded to itself.
		return p.reject(pn, req, ReasonDestinationIsProxy, dns.RcodeRefused)
	}
	ep, ok := p.cfg.Endpoints.Lookup(q.client.Addr().Unmap())
	if !ok {
		return p.reject(pn, req, ReasonUnknownSource, dns.RcodeRefused)
	}
	// Admission: global, then per endpoint.
	select {
	case p.sem <- struct{}{}:
	default:
		return p.reject(pn, req, ReasonOverload, dns.RcodeServerFailure)
	}
	defer func() { <-p.sem }()
	key := ep.Key()
	if !p.enterEndpoint(key) {
		return p.reject(pn, req, ReasonOverloadEndpoint, dns.RcodeServerFailure)
	}
	defer p.leaveEndpoint(key)
	p.m.inflight.Inc()
	defer p.m.inflight.Dec()

	remote := p.cfg.Remotes.IdentityOf(q.server.Addr().Unmap())
	cp := p.pol.Load()
	d := decisionNoRuleSet
	if cp != nil {
		d = cp.decide(key, q.proto, q.server.Port(), remote, req.Question[0].Name)
	}
	x := &exchange{q: q, req: req, ep: ep, remote: remote}
	switch d {
	case decisionNoRuleSet:
		p.emitRequest(x, false)
		return p.reject(pn, req, ReasonNoRuleSet, dns.RcodeRefused)
	case decisionDeny:
		p.emitRequest(x, false)
		return p.reject(pn, req, ReasonPolicyDenied, p.cfg.DenyRcode)
	}
	p.m.allowed[pn].Inc()
	p.emitRequest(x, true)
	resp := p.forward(ctx, x)
	p.emitResponse(x, resp)
	p.m.processBy[pn].Observe(max(0, time.Since(q.start)-x.upstreamTime-x.holdTime).Seconds())
	return resp
}

// reject counts a judged query that is not forwarded and builds its answer.
func (p *Proxy) reject(pn string, req *dns.Msg, reason string, rcode int) *dns.Msg {
	verdict := "rejected"
	if reason == ReasonPolicyDenied || reason == ReasonNoRuleSet || reason == ReasonUnknownSource {
		verdict = "denied"
	}
	p.m.queries.WithLabelValues(pn, verdict).Inc()
	p.m.reject(reason, rcodeResult(rcode))
	return errorReply(nil, req, rcode)
}

func rcodeResult(rcode int) string {
	switch rcode {
	case rcodeDrop:
		return resultDrop
	case dns.RcodeFormatError:
		return resultFormErr
	case dns.RcodeRefused:
		return resultRefused
	case dns.RcodeNameError:
		return resultNXDomain
	case dns.RcodeNotImplemented:
		return resultNotImp
	}
	return resultServFail
}

func (p *Proxy) enterEndpoint(k EndpointKey) bool {
	p.epMu.Lock()
	defer p.epMu.Unlock()
	if p.epCount[k] >= p.cfg.MaxInflightPerEndpoint {
		return false
	}
	p.epCount[k]++
	return true
}

func (p *Proxy) leaveEndpoint(k EndpointKey) {
	p.epMu.Lock()
	defer p.epMu.Unlock()
	if p.epCount[k]--; p.epCount[k] <= 0 {
		delete(p.epCount, k)
	}
}

// isSelf reports whether dst is one of the proxy's own listening
// addresses: the same port on a loopback, unspecified or listening
// address, or on an address of the host identity.
func (p *Proxy) isSelf(dst netip.AddrPort) bool {
	a := dst.Addr().Unmap()
	for _, l := range p.self {
		if l.Port() != dst.Port() {
			continue
		}
		la := l.Addr().Unmap()
		if a == la || a.IsLoopback() || a.IsUnspecified() || la.IsUnspecified() && p.cfg.Remotes.IdentityOf(a) == policy.IDHost {
			return true
		}
	}
	return false
}

// errClosed reports a listener closed by shutdown.
func errClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
