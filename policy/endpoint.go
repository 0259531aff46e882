package policy

import "net/netip"

// Endpoint is a local workload: a pod in Kubernetes, a network namespace in
// standalone mode.
type Endpoint struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels,omitempty"`
	IPv4      netip.Addr        `json:"ipv4"`
	IPv6      netip.Addr        `json:"ipv6,omitempty"`
	// Interface optionally names an existing host-side veth to adopt
	// (standalone mode); empty means the agent creates one.
	Interface string `json:"interface,omitempty"`
}

// Namespace carries a namespace's labels, used by namespaceSelector.
type Namespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Node is what the compiler knows about the node itself.
type Node struct {
	Name string `json:"name,omitempty"`
	// Addresses are the node's own addresses; they map to IDHost.
	Addresses []netip.Addr `json:"addresses,omitempty"`
}

// EndpointLabels returns the security-relevant labels of an endpoint: its
// own labels (source k8s unless prefixed), the namespace label, and the
// labels of its namespace under LabelNamespaceLabelsPrefix. ns may be nil.
func EndpointLabels(ep Endpoint, ns *Namespace) Labels {
	ls := NewLabels(SourceK8s, ep.Labels)
	ls[LabelNamespace] = Label{Source: SourceK8s, Key: LabelNamespace, Value: ep.Namespace}
	if ns != nil {
		for k, v := range ns.Labels {
			key := LabelNamespaceLabelsPrefix + k
			ls[key] = Label{Source: SourceK8s, Key: key, Value: v}
		}
	}
	return ls
}
