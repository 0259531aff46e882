package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatnet/moat/datapath"
)

// mapUpdatesDesc exports datapath.MapUpdates: map entries written or
// deleted by Sync. It stays flat while the plan does not change (an
// apiserver restart, a watch expiry, an agent restart over its pins).
var mapUpdatesDesc = prometheus.NewDesc("moat_datapath_map_updates_total",
	"BPF map entries written or deleted by the agent's syncs, by map (policy, ipcache, endpoints, local_ep).",
	[]string{"map"}, nil)

// mapUpdatesCollector reads the datapath's write counters at scrape time.
type mapUpdatesCollector struct{ dp *datapath.Datapath }

func (c mapUpdatesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- mapUpdatesDesc }

func (c mapUpdatesCollector) Collect(ch chan<- prometheus.Metric) {
	for m, n := range c.dp.MapUpdates() {
		ch <- prometheus.MustNewConstMetric(mapUpdatesDesc, prometheus.CounterValue, float64(n), m)
	}
}
