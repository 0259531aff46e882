package main

import (
	"maps"
	"slices"
)

func newSizeResult(n int) SizeResult {
	return SizeResult{
		Rules: n,
		HTTP:  map[string]WrkResult{},
		TCP:   map[string]IperfResult{},
		UDP:   map[string]IperfResult{},
		Prog:  map[string]ProgCost{},
	}
}

// addRun adds one run's results to r: rates and counts are summed per
// scenario (addMean divides the rates), iptables load times and program
// costs are collected.
func (r *SizeResult) addRun(one SizeResult) {
	for sc, v := range one.HTTP {
		w := r.HTTP[sc]
		w.RequestsPerSec += v.RequestsPerSec
		w.Requests += v.Requests
		w.SocketErrors += v.SocketErrors
		w.Non2xx += v.Non2xx
		r.HTTP[sc] = w
	}
	for sc, v := range one.TCP {
		t := r.TCP[sc]
		t.BitsPerSecond += v.BitsPerSecond
		r.TCP[sc] = t
	}
	for sc, v := range one.UDP {
		u := r.UDP[sc]
		u.BitsPerSecond += v.BitsPerSecond
		u.PacketsPerSecond += v.PacketsPerSecond
		u.LostPercent += v.LostPercent
		r.UDP[sc] = u
	}
	r.IptablesLoadAll = append(r.IptablesLoadAll, one.IptablesLoadAll...)
	for wl, c := range one.Prog {
		if prev, ok := r.Prog[wl]; ok {
			c = mergeCosts([]ProgCost{prev, c})
		}
		r.Prog[wl] = c
	}
}

// addMean adds the per-scenario sums of runs, divided by the runs each
// scenario had, to r (the counts stay sums).
func (r *SizeResult) addMean(runs SizeResult, per int) {
	d := float64(per)
	for sc, w := range runs.HTTP {
		w.RequestsPerSec /= d
		r.HTTP[sc] = w
	}
	for sc, t := range runs.TCP {
		t.BitsPerSecond /= d
		r.TCP[sc] = t
	}
	for sc, u := range runs.UDP {
		u.BitsPerSecond /= d
		u.PacketsPerSecond /= d
		u.LostPercent /= d
		r.UDP[sc] = u
	}
	r.IptablesLoadAll = append(r.IptablesLoadAll, runs.IptablesLoadAll...)
	maps.Copy(r.Prog, runs.Prog)
}

// MergeRounds combines the rounds of one size: medians of the rates and
// costs, sums of the counts, every replacement timing. Raw keeps each
// round's headline numbers ("http/a" → req/s per round, …); Paired keeps
// each round's own ratios ("http/b/a" → b/a per round, …), see
// pairedRatios.
func MergeRounds(n int, rounds []SizeResult) SizeResult {
	out := newSizeResult(n)
	out.Rounds = len(rounds)
	out.Raw = map[string][]float64{}
	out.Paired = pairedRatios(rounds)
	for _, sc := range []string{"a", "b", "c"} {
		var http, tcp, udp, udpBits, udpLost []float64
		var w WrkResult
		for _, r := range rounds {
			if v, ok := r.HTTP[sc]; ok {
				http = append(http, v.RequestsPerSec)
				w.Requests += v.Requests
				w.SocketErrors += v.SocketErrors
				w.Non2xx += v.Non2xx
			}
			if v, ok := r.TCP[sc]; ok {
				tcp = append(tcp, v.BitsPerSecond)
			}
			if v, ok := r.UDP[sc]; ok {
				udp = append(udp, v.PacketsPerSecond)
				udpBits = append(udpBits, v.BitsPerSecond)
				udpLost = append(udpLost, v.LostPercent)
			}
		}
		if len(http) > 0 {
			w.RequestsPerSec = median(http)
			out.HTTP[sc] = w
			out.Raw["http/"+sc] = http
		}
		if len(tcp) > 0 {
			out.TCP[sc] = IperfResult{BitsPerSecond: median(tcp)}
			out.Raw["tcp/"+sc] = tcp
		}
		if len(udp) > 0 {
			out.UDP[sc] = IperfResult{PacketsPerSecond: median(udp), BitsPerSecond: median(udpBits), LostPercent: median(udpLost)}
			out.Raw["udp/"+sc] = udp
		}
	}
	var loads []float64
	progs := map[string][]ProgCost{}
	for _, r := range rounds {
		out.ReplaceAll = append(out.ReplaceAll, r.ReplaceAll...)
		loads = append(loads, r.IptablesLoadAll...)
		for name, c := range r.Prog {
			progs[name] = append(progs[name], c)
		}
	}
	out.ReplaceMs = median(out.ReplaceAll)
	out.IptablesLoadAll = loads
	out.IptablesLoadMs = median(loads)
	for name, cs := range progs {
		out.Prog[name] = mergeCosts(cs)
		out.Raw["nsPerPacket/"+name] = costValues(cs)
	}
	return out
}

// pairedRatios returns, per workload and scenario, the ratio b/a or c/a of
// every round that measured both scenarios, keyed "http/b/a", "tcp/c/a", …
// (rounds in order; a round missing either side, or with a = 0, is left
// out). Scenarios of one round run back to back, so each ratio compares
// measurements seconds apart and the drift between rounds cancels out; the
// median of these is steadier than the ratio of the medians.
func pairedRatios(rounds []SizeResult) map[string][]float64 {
	out := map[string][]float64{}
	add := func(key string, a, x float64, okA, okX bool) {
		if okA && okX && a > 0 {
			out[key] = append(out[key], x/a)
		}
	}
	for _, r := range rounds {
		for _, sc := range []string{"b", "c"} {
			ha, okHA := r.HTTP["a"]
			hx, okHX := r.HTTP[sc]
			add("http/"+sc+"/a", ha.RequestsPerSec, hx.RequestsPerSec, okHA, okHX)
			ta, okTA := r.TCP["a"]
			tx, okTX := r.TCP[sc]
			add("tcp/"+sc+"/a", ta.BitsPerSecond, tx.BitsPerSecond, okTA, okTX)
			ua, okUA := r.UDP["a"]
			ux, okUX := r.UDP[sc]
			add("udp/"+sc+"/a", ua.PacketsPerSecond, ux.PacketsPerSecond, okUA, okUX)
		}
	}
	return out
}

func mergeCosts(cs []ProgCost) ProgCost {
	out := ProgCost{Runs: map[string]uint64{}, NsPerRun: map[string]float64{}}
	if len(cs) == 0 {
		return out
	}
	perRun := map[string][]float64{}
	for _, c := range cs {
		for name, runs := range c.Runs {
			out.Runs[name] += runs
		}
		for name, ns := range c.NsPerRun {
			perRun[name] = append(perRun[name], ns)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(perRun)) {
		out.NsPerRun[name] = median(perRun[name])
	}
	out.NsPerPacket = median(costValues(cs))
	return out
}

func costValues(cs []ProgCost) []float64 {
	out := make([]float64, len(cs))
	for i, c := range cs {
		out[i] = c.NsPerPacket
	}
	return out
}
