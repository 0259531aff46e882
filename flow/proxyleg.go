package flow

import (
	"net/netip"
	"sync"
)

// proxyLegs remembers, for the proxy's upstream connections, which client
// each one carried: upstream local address → downstream remote address,
// from the access-log entries (upstream_local_address). The proxy's
// upstream leg leaves from the proxy's own address; with this table a flow
// of that leg can name the client's endpoint instead of a bare address.
// It holds the last proxyLegsMax connections.
type proxyLegs struct {
	mu    sync.Mutex
	m     map[netip.AddrPort]netip.AddrPort
	order []netip.AddrPort // ring of keys, oldest at next
	next  int
}

const proxyLegsMax = 4096

func (p *proxyLegs) add(upstreamLocal, client netip.AddrPort) {
	if !upstreamLocal.IsValid() || !client.IsValid() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[netip.AddrPort]netip.AddrPort)
	}
	if _, ok := p.m[upstreamLocal]; !ok {
		if len(p.order) < proxyLegsMax {
			p.order = append(p.order, upstreamLocal)
		} else {
			delete(p.m, p.order[p.next])
			p.order[p.next] = upstreamLocal
			p.next = (p.next + 1) % proxyLegsMax
		}
	}
	p.m[upstreamLocal] = client
}

func (p *proxyLegs) client(upstreamLocal netip.AddrPort) (netip.AddrPort, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.m[upstreamLocal]
	return c, ok
}

// ClientOf returns the client address of the proxy connection whose
// upstream leg left from upstreamLocal, as the proxy's access log reported
// it (the last proxyLegsMax upstream connections are remembered).
func (s *AccessLogServer) ClientOf(upstreamLocal netip.AddrPort) (netip.AddrPort, bool) {
	return s.legs.client(netip.AddrPortFrom(upstreamLocal.Addr().Unmap(), upstreamLocal.Port()))
}
