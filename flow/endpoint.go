package flow

import "net/netip"

// Endpoint is one side of a flow, enriched with what moat knows about the
// address.
type Endpoint struct {
	IP netip.Addr
	// Identity is the numeric security identity (policy.ID; 0 = unknown).
	Identity  uint32
	Namespace string
	PodName   string
	// Workload is the name of the pod's owning workload (Deployment,
	// StatefulSet, ...); Hubble's first workload name.
	Workload string
	// App is the pod's app label value: the first of
	// app.kubernetes.io/name, k8s-app and app that is set.
	App string
	// Labels are the identity labels as "source:key=value" strings.
	Labels []string
}

// Enricher resolves an address to what is known about it. Implementations
// must be safe for concurrent use; an unknown address returns ok == false
// (the flow keeps the bare IP).
type Enricher interface {
	Resolve(ip netip.Addr) (ep Endpoint, ok bool)
}

// EnricherFunc adapts a function to Enricher.
type EnricherFunc func(ip netip.Addr) (Endpoint, bool)

// Resolve implements Enricher.
func (f EnricherFunc) Resolve(ip netip.Addr) (Endpoint, bool) { return f(ip) }

// Enrich fills src and dst from e, keeping the given IPs.
func Enrich(e Enricher, f *Flow) {
	if e == nil {
		return
	}
	if f.Source.IP.IsValid() {
		if ep, ok := e.Resolve(f.Source.IP); ok {
			ep.IP = f.Source.IP
			f.Source = ep
		}
	}
	if f.Destination.IP.IsValid() {
		if ep, ok := e.Resolve(f.Destination.IP); ok {
			ep.IP = f.Destination.IP
			f.Destination = ep
		}
	}
}
