package identity

// This file owns the allocator's Prometheus metrics (moat_identity_*), read
// from its Stats when scraped.

import "github.com/prometheus/client_golang/prometheus"

type collector struct {
	a     *Allocator
	descs map[string]*prometheus.Desc
}

var metricHelp = map[string]string{
	"moat_identity_api_requests_total":      "Requests the identity allocator sent to the apiserver (watches not included).",
	"moat_identity_created_total":           "Identity objects this agent created.",
	"moat_identity_lost_races_total":        "Identity creates that found the object already created by another agent.",
	"moat_identity_number_conflicts_total":  "Identity counter updates refused on resourceVersion (another agent took a number).",
	"moat_identity_recreated_total":         "Identities this agent uses that were deleted and created again.",
	"moat_identity_renumbered_total":        "Label sets whose identity number changed for this agent after a re-creation.",
	"moat_identity_unmarked_unused_total":   "Removals of moat-operator's unused mark from identities this agent uses.",
	"moat_identity_duplicate_numbers_total": "Identity numbers found on two identities (a reset counter); never used.",
	"moat_identity_referenced_label_sets":   "Label sets this agent holds a reference on.",
}

// Collector returns a prometheus.Collector of the allocator's metrics
// (moat_identity_*), for the agent's registry.
func (a *Allocator) Collector() prometheus.Collector {
	c := &collector{a: a, descs: map[string]*prometheus.Desc{}}
	for name, help := range metricHelp {
		c.descs[name] = prometheus.NewDesc(name, help, nil, nil)
	}
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.a.Stats()
	counter := func(name string, v uint64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v))
	}
	counter("moat_identity_api_requests_total", s.APIRequests)
	counter("moat_identity_created_total", s.Created)
	counter("moat_identity_lost_races_total", s.LostRaces)
	counter("moat_identity_number_conflicts_total", s.CounterConflicts)
	counter("moat_identity_recreated_total", s.Recreated)
	counter("moat_identity_renumbered_total", s.Renumbered)
	counter("moat_identity_unmarked_unused_total", s.UnmarkedUnused)
	counter("moat_identity_duplicate_numbers_total", s.Duplicates)
	c.a.mu.Lock()
	held := len(c.a.held)
	c.a.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.descs["moat_identity_referenced_label_sets"], prometheus.GaugeValue, float64(held))
}
