package l7proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originalsrcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_src/v3"
)

// Extension names as Envoy registers them.
const (
	hcmFilterName     = "envoy.filters.network.http_connection_manager"
	rbacFilterName    = "envoy.filters.http.rbac"
	routerFilterName  = "envoy.filters.http.router"
	grpcAccessLogName = "envoy.access_loggers.http_grpc"
	// Upstream connections keep the client's address; see upstream.go.
	originalSrcFilterName = "envoy.filters.listener.original_src"
)

// listenerSpec is a validated listener.
type listenerSpec struct {
	name        string
	addrs       []netip.AddrPort
	transparent bool
	// originalSrc: upstream connections keep the client's address (the
	// original_src listener filter; its mark is the clusters' SO_MARK).
	originalSrc bool
	chains      []*chainSpec
}

// chainSpec is a validated filter chain: its match and its connection
// manager.
type chainSpec struct {
	name string
	dst  []netip.Prefix // prefix_ranges; empty matches any
	src  []netip.Prefix // source_prefix_ranges; empty matches any
	hcm  *hcmSpec
}

func compileListener(l *listenerv3.Listener) (*listenerSpec, error) {
	where := fmt.Sprintf("listener %q", l.GetName())
	if l.GetName() == "" {
		return nil, fmt.Errorf("listener: empty name")
	}
	if err := onlyFields(l, where, "name", "address", "additional_addresses", "transparent", "filter_chains", "traffic_direction", "listener_filters"); err != nil {
		return nil, err
	}
	ls := &listenerSpec{name: l.GetName(), transparent: l.GetTransparent().GetValue()}
	for i, lf := range l.GetListenerFilters() {
		w := fmt.Sprintf("%s.listener_filters[%d]", where, i)
		if err := onlyFields(lf, w, "name", "typed_config"); err != nil {
			return nil, err
		}
		if lf.GetName() != originalSrcFilterName || ls.originalSrc {
			return nil, fmt.Errorf("%s: unsupported listener filter %q (only one %s)", w, lf.GetName(), originalSrcFilterName)
		}
		osrc := &originalsrcv3.OriginalSrc{}
		if err := unpack(lf.GetTypedConfig(), osrc, w+".typed_config"); err != nil {
			return nil, err
		}
		if err := onlyFields(osrc, w+".typed_config", "mark"); err != nil {
			return nil, err
		}
		ls.originalSrc = true
	}
	a, err := socketAddress(l.GetAddress(), where+".address")
	if err != nil {
		return nil, err
	}
	ls.addrs = append(ls.addrs, a)
	for i, aa := range l.GetAdditionalAddresses() {
		w := fmt.Sprintf("%s.additional_addresses[%d]", where, i)
		if err := onlyFields(aa, w, "address"); err != nil {
			return nil, err
		}
		a, err := socketAddress(aa.GetAddress(), w+".address")
		if err != nil {
			return nil, err
		}
		if slices.Contains(ls.addrs, a) {
			return nil, fmt.Errorf("%s: address %s given twice", w, a)
		}
		ls.addrs = append(ls.addrs, a)
	}
	if len(l.GetFilterChains()) == 0 {
		return nil, fmt.Errorf("%s: no filter chains", where)
	}
	seen := map[string]string{}
	for i, fc := range l.GetFilterChains() {
		w := fmt.Sprintf("%s.filter_chains[%d]", where, i)
		if fc.GetName() != "" {
			w = fmt.Sprintf("%s.filter_chains[%q]", where, fc.GetName())
		}
		c, err := compileChain(fc, w)
		if err != nil {
			return nil, err
		}
		key := fmt.Sprint(c.dst, c.src)
		if other, ok := seen[key]; ok {
			return nil, fmt.Errorf("%s: same match as filter chain %s", w, other)
		}
		seen[key] = strconv.Quote(c.name)
		ls.chains = append(ls.chains, c)
	}
	return ls, nil
}

func socketAddress(a *corev3.Address, where string) (netip.AddrPort, error) {
	if err := onlyFields(a, where, "socket_address"); err != nil {
		return netip.AddrPort{}, err
	}
	sa := a.GetSocketAddress()
	if sa == nil {
		return netip.AddrPort{}, fmt.Errorf("%s: missing socket_address", where)
	}
	if err := onlyFields(sa, where+".socket_address", "protocol", "address", "port_value"); err != nil {
		return netip.AddrPort{}, err
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return netip.AddrPort{}, fmt.Errorf("%s.socket_address.protocol: unsupported %s", where, sa.GetProtocol())
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s.socket_address.address: %w", where, err)
	}
	if sa.GetPortValue() > 65535 {
		return netip.AddrPort{}, fmt.Errorf("%s.socket_address.port_value: %d out of range", where, sa.GetPortValue())
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())), nil
}

func compileChain(fc *listenerv3.FilterChain, where string) (*chainSpec, error) {
	if err := onlyFields(fc, where, "name", "filter_chain_match", "filters"); err != nil {
		return nil, err
	}
	c := &chainSpec{name: fc.GetName()}
	if m := fc.GetFilterChainMatch(); m != nil {
		if err := onlyFields(m, where+".filter_chain_match", "prefix_ranges", "source_prefix_ranges"); err != nil {
			return nil, err
		}
		for i, r := range m.GetPrefixRanges() {
			p, err := cidrPrefix(r, fmt.Sprintf("%s.filter_chain_match.prefix_ranges[%d]", where, i))
			if err != nil {
				return nil, err
			}
			c.dst = append(c.dst, p)
		}
		for i, r := range m.GetSourcePrefixRanges() {
			p, err := cidrPrefix(r, fmt.Sprintf("%s.filter_chain_match.source_prefix_ranges[%d]", where, i))
			if err != nil {
				return nil, err
			}
			c.src = append(c.src, p)
		}
		slices.SortFunc(c.dst, comparePrefix)
		slices.SortFunc(c.src, comparePrefix)
	}
	if len(fc.GetFilters()) != 1 {
		return nil, fmt.Errorf("%s.filters: want exactly one %s, got %d filters", where, hcmFilterName, len(fc.GetFilters()))
	}
	f := fc.GetFilters()[0]
	fw := where + ".filters[0]"
	if err := onlyFields(f, fw, "name", "typed_config"); err != nil {
		return nil, err
	}
	hcm, err := compileHCM(f.GetTypedConfig(), fw+".typed_config")
	if err != nil {
		return nil, err
	}
	c.hcm = hcm
	return c, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// matchChain picks the filter chain of a connection the way Envoy does:
// destination address first, then source address; at each step the most
// specific prefix wins and chains without prefixes are the fallback. nil
// means no chain: the connection is closed.
func (l *listenerSpec) matchChain(src, dst netip.Addr) *chainSpec {
	cands := narrow(l.chains, dst.Unmap(), func(c *chainSpec) []netip.Prefix { return c.dst })
	cands = narrow(cands, src.Unmap(), func(c *chainSpec) []netip.Prefix { return c.src })
	if len(cands) == 0 {
		return nil
	}
	return cands[0]
}

func narrow(chains []*chainSpec, a netip.Addr, prefixes func(*chainSpec) []netip.Prefix) []*chainSpec {
	best := -1
	var out, fallback []*chainSpec
	for _, c := range chains {
		ps := prefixes(c)
		if len(ps) == 0 {
			fallback = append(fallback, c)
			continue
		}
		longest := -1
		for _, p := range ps {
			if p.Contains(a) && p.Bits() > longest {
				longest = p.Bits()
			}
		}
		switch {
		case longest < 0:
		case longest > best:
			best, out = longest, []*chainSpec{c}
		case longest == best:
			out = append(out, c)
		}
	}
	if best >= 0 {
		return out
	}
	return fallback
}
