package agent

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/moatnet/moat/datapath"
)

// setUplinks attaches the datapath's uplink program to the configured
// uplinks (and detaches it from interfaces a previous configuration named),
// then lets the embedded proxy keep the client's address towards the
// destinations routed through them.
func (a *Agent) setUplinks(dp *datapath.Datapath) error {
	idx := make([]int, 0, len(a.cfg.Uplinks))
	for _, name := range a.cfg.Uplinks {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return fmt.Errorf("uplinks %q: %w", name, err)
		}
		idx = append(idx, ifc.Index)
	}
	if err := dp.SetUplinks(idx); err != nil {
		return fmt.Errorf("attach uplink program to %v: %w", a.cfg.Uplinks, err)
	}
	if len(idx) > 0 {
		a.uplinkRoutes.Store(dp.UplinkRoutes())
	}
	return nil
}

// viaUplink says whether the host routes dst through an uplink.
func (a *Agent) viaUplink(dst netip.Addr) bool {
	r := a.uplinkRoutes.Load()
	return r != nil && r.Reaches(dst)
}
