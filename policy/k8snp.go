package policy

import (
	"github.com/moatnet/moat/api/v1alpha1"
)

// convertKubernetesNetworkPolicy converts a networking.k8s.io/v1
// NetworkPolicy with Kubernetes semantics into a Policy of kind
// KindKubernetesNetworkPolicy with one rule (path "spec"):
//
//   - podSelector selects endpoints of the policy's namespace; {} selects
//     all of them.
//   - policyTypes defaults to Ingress, plus Egress when egress rules are
//     present. Each listed type puts the selected endpoints into default
//     deny for that direction, so `ingress: []` (or no ingress) with type
//     Ingress denies all ingress. Rules of an unlisted type are ignored.
//   - A rule without from/to allows every peer. A peer's podSelector alone
//     selects pods of the policy's namespace; namespaceSelector selects
//     pods of matching namespaces through the
//     io.cilium.k8s.namespace.labels.<key> labels ({} = every namespace);
//     both together must both match. ipBlock selects addresses.
//   - Port protocol defaults to TCP; a missing port means every port of
//     the protocol; endPort makes a range.
func convertKubernetesNetworkPolicy(errs *docErrors, base string, np *v1alpha1.KubernetesNetworkPolicy) *Policy {
	pol := &Policy{Kind: KindKubernetesNetworkPolicy, Name: np.Name, Namespace: np.Namespace}
	if np.Name == "" {
		errs.add(joinPath(base, "metadata.name"), "required")
	}
	if pol.Namespace == "" {
		pol.Namespace = "default"
	}
	spec := joinPath(base, "spec")
	rule := Rule{Path: spec}
	rule.EndpointSelector = convertSelector(errs, joinPath(spec, "podSelector"), &np.Spec.PodSelector).With(namespaceRequirement(pol.Namespace))

	ingress, egress := true, len(np.Spec.Egress) > 0
	if len(np.Spec.PolicyTypes) > 0 {
		ingress, egress = false, false
		for i, t := range np.Spec.PolicyTypes {
			switch t {
			case "Ingress":
				ingress = true
			case "Egress":
				egress = true
			default:
				errs.add(indexPath(joinPath(spec, "policyTypes"), i), "invalid policy type %q: must be Ingress or Egress", t)
			}
		}
	}
	rule.DefaultDenyIngress, rule.DefaultDenyEgress = ingress, egress
	if ingress {
		for i, r := range np.Spec.Ingress {
			p := indexPath(joinPath(spec, "ingress"), i)
			rule.Ingress = append(rule.Ingress, convertK8sRule(errs, p, "from", r.From, r.Ports, pol.Namespace))
		}
	}
	if egress {
		for i, r := range np.Spec.Egress {
			p := indexPath(joinPath(spec, "egress"), i)
			rule.Egress = append(rule.Egress, convertK8sRule(errs, p, "to", r.To, r.Ports, pol.Namespace))
		}
	}
	pol.Rules = []Rule{rule}
	return pol
}

// convertK8sRule converts one ingress or egress rule of a NetworkPolicy.
func convertK8sRule(errs *docErrors, path, peerField string, peers []v1alpha1.KubernetesNetworkPolicyPeer, ports []v1alpha1.KubernetesNetworkPolicyPort, ns string) PeerRule {
	out := PeerRule{Path: path}
	for i, peer := range peers {
		p := indexPath(joinPath(path, peerField), i)
		hasSel := peer.PodSelector != nil || peer.NamespaceSelector != nil
		switch {
		case peer.IPBlock != nil && hasSel:
			errs.add(joinPath(p, "ipBlock"), "ipBlock cannot be combined with podSelector or namespaceSelector")
		case peer.IPBlock != nil:
			if r, ok := convertCIDRRule(errs, joinPath(p, "ipBlock"), peer.IPBlock.CIDR, peer.IPBlock.Except); ok {
				out.Peers.CIDRs = append(out.Peers.CIDRs, r)
			}
		case hasSel:
			out.Peers.Endpoints = append(out.Peers.Endpoints, k8sPeerSelector(errs, p, &peer, ns))
		default:
			errs.add(p, "must specify podSelector, namespaceSelector or ipBlock")
		}
	}
	for i, port := range ports {
		p := indexPath(joinPath(path, "ports"), i)
		if pp, ok := convertK8sPort(errs, p, port); ok {
			out.Ports = append(out.Ports, PortRule{Path: p, Ports: []PortProtocol{pp}})
		}
	}
	return out
}

// k8sPeerSelector builds the endpoint selector of a podSelector and/or
// namespaceSelector peer.
func k8sPeerSelector(errs *docErrors, path string, peer *v1alpha1.KubernetesNetworkPolicyPeer, ns string) Selector {
	var sel Selector
	if peer.PodSelector != nil {
		sel = convertSelector(errs, joinPath(path, "podSelector"), peer.PodSelector)
	}
	if peer.NamespaceSelector == nil {
		return sel.With(namespaceRequirement(ns))
	}
	nsSel := convertSelector(errs, joinPath(path, "namespaceSelector"), peer.NamespaceSelector)
	for _, r := range nsSel.Requirements {
		r.Source = SourceK8s
		r.Key = LabelNamespaceLabelsPrefix + r.Key
		sel = sel.With(r)
	}
	// Only pods have a namespace: this keeps `namespaceSelector: {}` from
	// selecting the world or the host.
	return sel.With(Requirement{Source: SourceK8s, Key: LabelNamespace, Operator: OpExists})
}

// convertK8sPort converts one NetworkPolicyPort.
func convertK8sPort(errs *docErrors, path string, port v1alpha1.KubernetesNetworkPolicyPort) (PortProtocol, bool) {
	proto := ProtoTCP
	if port.Protocol != nil {
		switch *port.Protocol {
		case "TCP":
		case "UDP":
			proto = ProtoUDP
		case "SCTP":
			proto = ProtoSCTP
		default:
			errs.add(joinPath(path, "protocol"), "invalid protocol %q: must be TCP, UDP or SCTP", *port.Protocol)
			return PortProtocol{}, false
		}
	}
	var num uint16
	if port.Port != nil {
		if port.Port.Type == v1alpha1.IntOrStringString {
			errs.add(joinPath(path, "port"), "invalid port %q: named ports are not supported, use a number", port.Port.StrVal)
			return PortProtocol{}, false
		}
		if port.Port.IntVal < 1 || port.Port.IntVal > 65535 {
			errs.add(joinPath(path, "port"), "port %d out of range 1-65535", port.Port.IntVal)
			return PortProtocol{}, false
		}
		num = uint16(port.Port.IntVal)
	}
	var end int64
	if port.EndPort != nil {
		end = int64(*port.EndPort)
		if end == 0 {
			errs.add(joinPath(path, "endPort"), "endPort %d out of range 1-65535", end)
			return PortProtocol{}, false
		}
	}
	rng, ok := portRange(errs, path, num, end)
	if !ok {
		return PortProtocol{}, false
	}
	return PortProtocol{Ports: rng, Proto: proto}, true
}
