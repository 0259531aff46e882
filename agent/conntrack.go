package agent

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatnet/moat/datapath"
)

// ctCollector runs the connection-tracking GC every ConntrackGCInterval
// (datapath.ConntrackGC: expired entries are deleted, so that the LRU map
// need not evict live flows for new ones) and exports what the latest pass
// found: live entries by protocol and the entries removed (moat_ct's map
// pressure goes out with the other maps', see mapPressureCollector).
type ctCollector struct {
	dp       *datapath.Datapath
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	last    datapath.ConntrackStats
	ok      bool // last holds a pass
	removed float64
}

var (
	ctLive = prometheus.NewDesc("moat_ct_live_entries",
		"Connection-tracking entries not yet expired at the latest GC pass, by protocol (one per flow and local endpoint it crosses).",
		[]string{"protocol"}, nil)
	ctRemoved = prometheus.NewDesc("moat_ct_gc_removed_entries_total",
		"Expired connection-tracking entries deleted by the GC.", nil, nil)
)

// run collects until ctx ends: once at once, then every interval.
func (c *ctCollector) run(ctx context.Context) error {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		c.collect()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *ctCollector) collect() {
	st, err := c.dp.ConntrackGC()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed += float64(st.Removed)
	if err != nil {
		// The counts of a sweep cut short are not exported; the next pass
		// starts over.
		c.log.Warn("connection-tracking GC failed", "err", err, "removed", st.Removed)
		return
	}
	c.last, c.ok = st, true
	c.log.Debug("connection-tracking GC", "live", st.Live, "removed", st.Removed, "took", st.Took)
}

// latest returns the latest pass's counts, if a pass has completed.
func (c *ctCollector) latest() (datapath.ConntrackStats, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.ok
}

func (c *ctCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- ctLive
	ch <- ctRemoved
}

func (c *ctCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(ctRemoved, prometheus.CounterValue, c.removed)
	if !c.ok {
		return
	}
	st := c.last
	for proto, n := range map[string]int{"tcp": st.LiveTCP, "udp": st.LiveUDP, "icmp": st.LiveICMP, "other": st.LiveOther} {
		ch <- prometheus.MustNewConstMetric(ctLive, prometheus.GaugeValue, float64(n), proto)
	}
}
