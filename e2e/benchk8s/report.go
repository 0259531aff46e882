package main

// report.go owns the benchmark's report: JSON fields and the table.

import (
	"fmt"
	"io"
	"maps"
	"slices"
)

// Report is one run's figures.
type Report struct {
	Config             Config  `json:"config"`
	PopulateSeconds    float64 `json:"populateSeconds"`
	InitialSyncSeconds float64 `json:"initialSyncSeconds"`
	Identities         int     `json:"identities"`
	RemoteEndpoints    int     `json:"remoteEndpoints"`
	// ApplyMillis are the apply-to-Plan latencies, in apply order.
	ApplyMillis    []float64 `json:"applyMillis"`
	ApplyP50Millis float64   `json:"applyP50Millis"`
	ApplyP99Millis float64   `json:"applyP99Millis"`
	ApplyMaxMillis float64   `json:"applyMaxMillis"`
	// RSSMiB is the agent's VmRSS after the applies, PeakRSSMiB its VmHWM.
	RSSMiB     float64    `json:"rssMiB"`
	PeakRSSMiB float64    `json:"peakRssMiB"`
	Idle       IdleReport `json:"idle"`
}

// IdleReport is the idle agent's traffic to the apiserver.
type IdleReport struct {
	Seconds float64 `json:"seconds"`
	// ByVerb: the agent's requests per minute as the proxy saw them
	// (WATCH: watches started; GET/LIST: gets and lists).
	ByVerb            map[string]float64 `json:"perMinuteByVerb"`
	NonWatchPerMinute float64            `json:"nonWatchPerMinute"`
	OpenWatches       int                `json:"openWatches"`
	// APIServerByVerb: apiserver_request_total per minute over the window,
	// "VERB resource", for the resources the agent reads (completed
	// requests: a watch counts when it ends).
	APIServerByVerb map[string]float64 `json:"apiserverPerMinute"`
}

// WriteTable prints the figures for people.
func (r *Report) WriteTable(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "moat bench-k8s: %d policies, %d local pods, %d pods on %d other nodes, %d namespaces\n",
		c.Policies, c.LocalPods, c.ClusterPods, c.Nodes, c.Namespaces)
	fmt.Fprintf(w, "  populate (client creates)      %8.1f s\n", r.PopulateSeconds)
	fmt.Fprintf(w, "  agent initial sync             %8.1f s   (%d identities, %d remote endpoints)\n", r.InitialSyncSeconds, r.Identities, r.RemoteEndpoints)
	if n := len(r.ApplyMillis); n > 0 {
		fmt.Fprintf(w, "  apply -> Plan (%d applies)     p50 %6.0f ms   p99 %6.0f ms   max %6.0f ms   (goal p99 <= 1000 ms)\n",
			n, r.ApplyP50Millis, r.ApplyP99Millis, r.ApplyMaxMillis)
	}
	if r.RSSMiB > 0 {
		fmt.Fprintf(w, "  agent RSS                      %8.1f MiB (peak %.1f MiB; goal <= 150 MiB)\n", r.RSSMiB, r.PeakRSSMiB)
	}
	if r.Idle.Seconds > 0 {
		fmt.Fprintf(w, "  idle agent, %.0f s window:       %.1f non-watch requests/min, %d watches open (goal: watches only)\n",
			r.Idle.Seconds, r.Idle.NonWatchPerMinute, r.Idle.OpenWatches)
		for _, k := range slices.Sorted(maps.Keys(r.Idle.ByVerb)) {
			fmt.Fprintf(w, "    agent %-10s %6.1f/min\n", k, r.Idle.ByVerb[k])
		}
		for _, k := range slices.Sorted(maps.Keys(r.Idle.APIServerByVerb)) {
			fmt.Fprintf(w, "    apiserver_request_total %-40s %6.1f/min\n", k, r.Idle.APIServerByVerb[k])
		}
	}
}
