package datapath

import (
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// uplinkRouteTTL is how long an UplinkRoutes answer is reused.
const uplinkRouteTTL = 2 * time.Second

// maxUplinkRoutes bounds the cached answers; beyond it the cache starts
// afresh.
const maxUplinkRoutes = 4096

// UplinkRoutes answers whether the host routes an address through one of
// the Datapath's uplinks (SetUplinks), where from_uplink hands the replies
// of a proxy's upstream leg to the proxy's socket. A proxy may then dial
// that address from the client pod's own address: its replies come back
// to it (with symmetric routing). Answers are cached for a short while;
// a failed lookup answers false, so the proxy dials from the node's
// address (fail safe: the connection still works, only the source is the
// node's). Safe for concurrent use.
type UplinkRoutes struct {
	d     *Datapath
	route func(netip.Addr) (int, bool) // output ifindex of the route; false: none or local
	now   func() time.Time

	mu    sync.Mutex
	cache map[netip.Addr]uplinkAnswer
}

type uplinkAnswer struct {
	ok bool
	at time.Time
}

// UplinkRoutes returns the route oracle of d's uplinks, looking routes up
// in the calling goroutine's network namespace (the host's).
func (d *Datapath) UplinkRoutes() *UplinkRoutes {
	return &UplinkRoutes{d: d, route: routeInterface, now: time.Now, cache: map[netip.Addr]uplinkAnswer{}}
}

// Reaches says whether the route to dst leaves through an uplink.
func (u *UplinkRoutes) Reaches(dst netip.Addr) bool {
	dst = dst.Unmap()
	if !dst.IsValid() {
		return false
	}
	now := u.now()
	u.mu.Lock()
	if a, ok := u.cache[dst]; ok && now.Sub(a.at) < uplinkRouteTTL {
		u.mu.Unlock()
		return a.ok
	}
	u.mu.Unlock()
	ok := false
	if idx, found := u.route(dst); found {
		for _, up := range u.d.Uplinks() {
			if up == idx {
				ok = true
				break
			}
		}
	}
	u.mu.Lock()
	if len(u.cache) >= maxUplinkRoutes {
		clear(u.cache)
	}
	u.cache[dst] = uplinkAnswer{ok: ok, at: now}
	u.mu.Unlock()
	return ok
}

// routeInterface returns the output interface of the host's route to dst;
// false when there is none, or when dst is the host's own (a local route).
func routeInterface(dst netip.Addr) (int, bool) {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return 0, false
	}
	r := routes[0]
	if r.Type == unix.RTN_LOCAL || r.LinkIndex <= 0 {
		return 0, false
	}
	return r.LinkIndex, true
}
