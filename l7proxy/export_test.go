package l7proxy

import (
	"net/netip"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
)

// CompileRBACForTest compiles an RBAC filter config as a listener update
// would and returns its decision function, for the external differential
// test (which may import envoy; this package may not).
func CompileRBACForTest(cfg *rbacfilterv3.RBAC) (func(method, authority, path string, hdr map[string]string, src, dst netip.AddrPort) bool, error) {
	engine, err := compileRBACFilter(cfg, "rbac")
	if err != nil {
		return nil, err
	}
	return func(method, authority, path string, hdr map[string]string, src, dst netip.AddrPort) bool {
		r := request{
			method: method, authority: authority, path: path,
			header: func(name string) (string, bool) { v, ok := hdr[strings.ToLower(name)]; return v, ok },
			source: src, dest: dst,
		}
		ok, _ := engine.evaluate(&r)
		return ok
	}, nil
}

// KeepsSourceForTest compiles a listener as a listener update would and
// says whether an upstream connection of a downstream connection src -> dst
// accepted on it keeps the client's address, on a proxy that knows no local
// endpoint and no uplink (for the external test that translates with envoy).
func KeepsSourceForTest(l *listenerv3.Listener, src, dst netip.AddrPort) (bool, error) {
	ls, err := compileListener(l)
	if err != nil {
		return false, err
	}
	p := &Proxy{}
	p.snap.Store(&snapshot{listeners: map[string]*listenerSpec{ls.name: ls}})
	return p.keepSource(&connInfo{listener: ls.name, source: src, dest: dst}), nil
}
