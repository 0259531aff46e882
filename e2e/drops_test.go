package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"
)

const dropsEndpoints = `endpoints:
- name: a
  labels: {app: a}
  ipv4: 10.213.0.1
- name: b
  labels: {app: b}
  ipv4: 10.213.0.2
- name: c
  labels: {app: c}
  ipv4: 10.213.0.3
`

const dropsPolicy = cnp + `metadata: {name: b-drops}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: c}}]
    toPorts: [{ports: [{port: "8081", protocol: TCP}]}]
`

// TestPrivilegedDropsVisible checks that denied traffic shows up as DROPPED
// flows on the local API (reason, endpoint names, identities) and in the
// Hubble drop metric, next to the flow and policy metrics.
func TestPrivilegedDropsVisible(t *testing.T) {
	requirePrivileged(t)
	a := startAgent(t, agentSpec{short: "d", endpoints: dropsEndpoints, policies: map[string]string{"p.yaml": dropsPolicy}, verdictEvents: true})
	pa := endpointPeer(a, "a", "10.213.0.1")
	pb := endpointPeer(a, "b", "10.213.0.2")
	pc := endpointPeer(a, "c", "10.213.0.3")
	serveEcho(t, pb, []uint16{8080, 8081}, []uint16{5000, 5001})
	st, err := a.status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	idB, _ := statusEndpoint(st, "b")
	idC, _ := statusEndpoint(st, "c")
	if idB.Identity == 0 || idC.Identity == 0 || idB.Identity == idC.Identity {
		t.Fatalf("identities b=%d c=%d: want two distinct non-zero ones", idB.Identity, idC.Identity)
	}
	if err := probe(pa, pb.addr, protoTCP, 8080, 2*time.Second); err != nil {
		t.Fatalf("a->b:8080 (allowed): %v", err)
	}
	// --verdict-events: the allowed flow is reported too.
	fwd := a.waitFlow("a->b forwarded", "last=200&verdict=FORWARDED", 5*time.Second, func(f flowRecord) bool {
		return f.IP.Source == pa.addr.String() && f.IP.Destination == pb.addr.String() && f.L4.DestinationPort == 8080
	})
	if fwd.Source.PodName != "a" || fwd.Destination.PodName != "b" || fwd.DropReason != "" {
		t.Errorf("forwarded flow %+v: want a -> b without a drop reason", fwd)
	}

	m0, err := a.metrics()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m0.sum("moat_policies", nil); !ok || v != 1 {
		t.Errorf("moat_policies = %v (present %v), want 1", v, ok)
	}
	// The allowed flow is tracked at a's egress and b's ingress (closing
	// for 10 s); the suite's agent runs its CT GC every second.
	ctDeadline := time.Now().Add(5 * time.Second)
	for {
		m, err := a.metrics()
		if err != nil {
			t.Fatal(err)
		}
		liveTCP, _ := m.sum("moat_ct_live_entries", map[string]string{"protocol": "tcp"})
		live, _ := m.sum("moat_ct_live_entries", nil)
		ctPressure, ok := m.sum("moat_bpf_map_pressure", map[string]string{"map_name": "moat_ct"})
		if _, gc := m.sum("moat_ct_gc_removed_entries_total", nil); liveTCP >= 2 && ok && gc {
			if ctPressure != live/262144 {
				t.Errorf("moat_bpf_map_pressure{map_name=moat_ct} = %v, want live entries / 262144 = %v", ctPressure, live/262144)
			}
			break
		}
		if time.Now().After(ctDeadline) {
			t.Fatalf("moat_ct_live_entries{protocol=tcp} = %v, moat_ct pressure present %v: want the 2 entries of a->b:8080 within 5 s", liveTCP, ok)
		}
		time.Sleep(100 * time.Millisecond) // poll interval of a deadline-bounded wait
	}

	cases := []struct {
		name   string
		proto  proto
		port   uint16
		reason string
	}{
		{name: "default deny TCP", proto: protoTCP, port: 8080, reason: "POLICY_DENIED"},
		{name: "explicit deny TCP", proto: protoTCP, port: 8081, reason: "POLICY_DENY"},
		{name: "default deny UDP", proto: protoUDP, port: 5000, reason: "POLICY_DENIED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			labels := map[string]string{"reason": c.reason, "protocol": string(c.proto)}
			before, err := a.metrics()
			if err != nil {
				t.Fatal(err)
			}
			dropsBefore, _ := before.sum("hubble_drop_total", labels)
			processedBefore, _ := before.sum("hubble_flows_processed_total", map[string]string{"verdict": "DROPPED"})

			if err := probe(pc, pb.addr, c.proto, c.port, 500*time.Millisecond); !errors.Is(err, errNoAnswer) {
				t.Fatalf("c->b %d/%s: %v, want dropped", c.port, c.proto, err)
			}
			f := a.waitFlow("c->b dropped", "last=200&verdict=DROPPED", 5*time.Second, func(f flowRecord) bool {
				return f.EventType == "Drop" && f.L4.Protocol == string(c.proto) && f.L4.DestinationPort == c.port && f.IP.Source == pc.addr.String()
			})
			all, err := a.flows("last=200&verdict=DROPPED")
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range all {
				if g.IP.Source == pc.addr.String() && g.L4.DestinationPort == c.port && g.DropReason == "" {
					t.Errorf("DROPPED flow without a drop reason: %+v", g)
				}
			}
			if f.Verdict != "DROPPED" || f.DropReason != c.reason {
				t.Errorf("flow verdict %s reason %q, want DROPPED %q", f.Verdict, f.DropReason, c.reason)
			}
			if f.Source.PodName != "c" || f.Source.Namespace != "default" || f.Source.Identity != uint32(idC.Identity) {
				t.Errorf("flow source %+v, want default/c identity %d", f.Source, idC.Identity)
			}
			if f.Destination.PodName != "b" || f.Destination.Namespace != "default" || f.Destination.Identity != uint32(idB.Identity) {
				t.Errorf("flow destination %+v, want default/b identity %d", f.Destination, idB.Identity)
			}
			if f.IP.Destination != pb.addr.String() || f.TrafficDirection != "INGRESS" {
				t.Errorf("flow IP %+v direction %s, want destination %s INGRESS", f.IP, f.TrafficDirection, pb.addr)
			}

			var after metricSet
			deadline := time.Now().Add(5 * time.Second)
			for {
				after, err = a.metrics()
				if err != nil {
					t.Fatal(err)
				}
				if v, _ := after.sum("hubble_drop_total", labels); v > dropsBefore {
					break
				}
				if time.Now().After(deadline) {
					v, ok := after.sum("hubble_drop_total", labels)
					t.Fatalf("hubble_drop_total%v = %v (present %v), want more than %v", labels, v, ok, dropsBefore)
				}
				time.Sleep(20 * time.Millisecond) // poll interval of a deadline-bounded wait
			}
			for _, s := range after {
				// The exposition sorts label names, so only the set is visible.
				if s.name == "hubble_drop_total" && !slices.Equal(slices.Sorted(maps.Keys(s.labels)), []string{"protocol", "reason"}) {
					t.Errorf("hubble_drop_total labels %v, want protocol and reason (no context labels configured)", s.order)
					break
				}
			}
			if v, _ := after.sum("hubble_flows_processed_total", map[string]string{"verdict": "DROPPED"}); v <= processedBefore {
				t.Errorf("hubble_flows_processed_total{verdict=DROPPED} = %v, want more than %v", v, processedBefore)
			}
			if v, ok := after.sum("moat_policies", nil); !ok || v != 1 {
				t.Errorf("moat_policies = %v (present %v), want 1", v, ok)
			}
		})
	}

	t.Run("follow streams new drops", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		got := make(chan flowRecord, 16)
		go followFlows(ctx, a, "follow=true&last=0&verdict=DROPPED", got)
		// The stream may subscribe after the first probe: probe until a
		// drop of this port (used nowhere else in the test) arrives.
		for {
			if err := probe(pc, pb.addr, protoUDP, 5001, 300*time.Millisecond); !errors.Is(err, errNoAnswer) {
				t.Fatalf("c->b 5001/UDP: %v, want dropped", err)
			}
			select {
			case f := <-got:
				if f.L4.DestinationPort != 5001 || f.Source.PodName != "c" || f.Verdict != "DROPPED" {
					t.Fatalf("followed flow %+v, want c -> b 5001/UDP DROPPED", f)
				}
				return
			case <-ctx.Done():
				t.Fatal("no drop on the followed flow stream within 10s")
			default:
			}
		}
	})
}

// followFlows streams GET /v1/flows?<query> (follow) into out until ctx ends.
func followFlows(ctx context.Context, a *testAgent, query string, out chan<- flowRecord) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/flows?"+query, nil)
	if err != nil {
		return
	}
	client := &http.Client{Transport: a.api.Transport} // no overall timeout: ctx bounds it
	resp, err := client.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var f flowRecord
		if err := dec.Decode(&f); err != nil {
			return
		}
		select {
		case out <- f:
		case <-ctx.Done():
			return
		}
	}
}
