package datapath

// MapPressure reports how full the maps that Sync writes are, as a fraction
// of their capacity (entries / max_entries), keyed by map name. It reads the
// agent's own record of what it wrote, not the kernel, so it costs no
// syscall. The connection-tracking map, which the programs write, is
// measured by a sweep instead (ConntrackStats).
func (d *Datapath) MapPressure() map[string]float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	ratio := func(n int, max uint32) float64 {
		if max == 0 {
			return 0
		}
		return float64(n) / float64(max)
	}
	hashed := 0
	for k := range d.state.policy {
		if k.inHash() {
			hashed++
		}
	}
	return map[string]float64{
		"moat_policy_h":  ratio(hashed, d.objs.MoatPolicyH.MaxEntries()),
		"moat_policy":    ratio(len(d.state.policy)-hashed, d.objs.MoatPolicy.MaxEntries()),
		"moat_ipcache":   ratio(len(d.state.ipcache), d.objs.MoatIpcache.MaxEntries()),
		"moat_endpoints": ratio(len(d.state.endpoints), d.objs.MoatEndpoints.MaxEntries()),
	}
}
