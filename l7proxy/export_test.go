package l7proxy

import (
	"net/netip"
	"strings"

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
