package l7proxy

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originalsrcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_src/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The ingress listener that envoy/ emits carries original_src (the
// l7proxy_test harness runs it end to end); l7proxy accepts that filter and
// refuses any other listener filter or option it does not implement, naming
// the field. The listener filters are read before the filter chains, so a
// listener without chains fails on its chains only when its filters passed.
func TestCompileListenerOriginalSrc(t *testing.T) {
	withFilter := func(name string, cfg proto.Message) *listenerv3.Listener {
		a, err := anypb.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return &listenerv3.Listener{
			Name: "moat/ingress-http/15002",
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15002},
			}}},
			ListenerFilters: []*listenerv3.ListenerFilter{{Name: name, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: a}}},
		}
	}
	tests := []struct {
		name string
		l    *listenerv3.Listener
		want string
	}{
		{"original_src with mark", withFilter(originalSrcFilterName, &originalsrcv3.OriginalSrc{Mark: 0xA00}), "no filter chains"},
		{"bind_port", withFilter(originalSrcFilterName, &originalsrcv3.OriginalSrc{BindPort: true, Mark: 1}), "listener_filters[0].typed_config: unsupported field bind_port"},
		{"other filter", withFilter("envoy.filters.listener.tls_inspector", &originalsrcv3.OriginalSrc{}), `listener_filters[0]: unsupported listener filter "envoy.filters.listener.tls_inspector"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileListener(tt.l)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("compileListener: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// An upstream connection leaves from the client's address only where the
// downstream connection says so, with socket options on, and when the
// client's and the destination's families agree.
func TestSourceTransportSource(t *testing.T) {
	v4 := netip.MustParseAddrPort("10.0.0.20:40000")
	v6 := netip.MustParseAddrPort("[fd00::20]:40000")
	dst4 := netip.MustParseAddrPort("10.0.0.10:80")
	ctx := func(src, dst netip.AddrPort, keep bool) context.Context {
		c := context.WithValue(context.Background(), exchangeKey{}, &exchange{connInfo: &connInfo{source: src, dest: dst}})
		if keep {
			c = context.WithValue(c, keepSourceKey{}, &keepSourceInfo{clients: newClientTuples(), keep: func() bool { return true }})
		}
		return c
	}
	tests := []struct {
		name     string
		sockopts bool
		ctx      context.Context
		want     netip.Addr
	}{
		{"kept", true, ctx(v4, dst4, true), v4.Addr()},
		{"not kept: node address", true, ctx(v4, dst4, false), netip.Addr{}},
		{"not kept now", true, context.WithValue(ctx(v4, dst4, false), keepSourceKey{}, &keepSourceInfo{clients: newClientTuples(), keep: func() bool { return false }}), netip.Addr{}},
		{"no socket options", false, ctx(v4, dst4, true), netip.Addr{}},
		{"families differ", true, ctx(v6, dst4, true), netip.Addr{}},
		{"no exchange", true, context.WithValue(context.Background(), keepSourceKey{}, &keepSourceInfo{clients: newClientTuples(), keep: func() bool { return true }}), netip.Addr{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sourceTransport{spec: &clusterSpec{}, sockopts: tt.sockopts}
			if got := s.source(tt.ctx); got != tt.want {
				t.Errorf("source = %v, want %v", got, tt.want)
			}
		})
	}
}

// clientTuples counts open client connections per tuple: an upstream bind
// that would take the tuple of one still open is refused, and a closed one
// frees its tuple.
func TestClientTuples(t *testing.T) {
	c := newClientTuples()
	client := netip.MustParseAddrPort("10.0.0.20:40000")
	dest := netip.MustParseAddrPort("10.0.0.10:80")
	other := netip.MustParseAddrPort("10.0.0.11:80")
	k := [2]netip.AddrPort{client, dest}
	c.add(k)
	c.add(k) // a second connection on the same tuple (after TIME_WAIT reuse)
	if !c.has(client, dest) || c.has(client, other) {
		t.Fatalf("has: want only %v -> %v", client, dest)
	}
	c.remove(k)
	if !c.has(client, dest) {
		t.Fatal("one of two connections closed: the tuple is still open")
	}
	c.remove(k)
	if c.has(client, dest) || len(c.n) != 0 {
		t.Fatalf("all closed: tuples %v, want none", c.n)
	}
}

// keepSource: the ingress listener (original_src) always keeps the client's
// address; the egress listener keeps it towards a local endpoint and towards
// an address routed through an uplink, never towards one that the ingress
// listener takes, and not towards anything else (the node itself, an
// interface without the uplink program).
func TestKeepSource(t *testing.T) {
	client := netip.MustParseAddrPort("10.0.0.20:40000")
	local := netip.MustParseAddr("10.0.0.10")
	guarded := netip.MustParseAddr("10.0.0.11")
	world := netip.MustParseAddr("192.0.2.77")
	node := netip.MustParseAddr("172.16.0.1")
	ingress := &listenerSpec{originalSrc: true, chains: []*chainSpec{{dst: []netip.Prefix{netip.PrefixFrom(guarded, 32)}}}}
	egress := &listenerSpec{}
	in := func(a netip.Addr, set ...netip.Addr) bool { return slices.Contains(set, a) }
	tests := []struct {
		name     string
		listener string
		dest     netip.Addr
		uplinks  bool // UplinkDestination set
		want     bool
	}{
		{"ingress listener", "in", guarded, false, true},
		{"egress to a local endpoint", "out", local, false, true},
		{"egress to a local endpoint the ingress proxy takes", "out", guarded, true, false},
		{"egress to the world routed through an uplink", "out", world, true, true},
		{"egress to the world without uplinks", "out", world, false, false},
		{"egress to the node itself", "out", node, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Proxy{cfg: Config{LocalDestination: func(a netip.Addr) bool { return in(a, local, guarded) }}}
			if tt.uplinks {
				p.cfg.UplinkDestination = func(a netip.Addr) bool { return in(a, world) }
			}
			p.snap.Store(&snapshot{listeners: map[string]*listenerSpec{"in": ingress, "out": egress}})
			ci := &connInfo{listener: tt.listener, source: client, dest: netip.AddrPortFrom(tt.dest, 80)}
			if got := p.keepSource(ci); got != tt.want {
				t.Errorf("keepSource(%s -> %v) = %v, want %v", tt.listener, tt.dest, got, tt.want)
			}
		})
	}
}
