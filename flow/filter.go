package flow

import (
	"fmt"
	"strings"

	"github.com/moatnet/moat/policy/fqdn"
)

// Filter selects flows. Every set field must match; the zero Filter matches
// every flow. Endpoint fields match either side of the flow.
type Filter struct {
	// Verdicts, if not empty, lists the verdicts to keep.
	Verdicts []Verdict
	// Namespace matches the source or destination namespace.
	Namespace string
	// Pod matches the source or destination pod name; "ns/pod" also pins the
	// namespace of that side.
	Pod string
	// Protocol matches Flow.Protocol() or the L4 protocol, case-insensitively
	// ("tcp", "udp", "icmpv4", "http", "dns").
	Protocol string
	// Port matches the source or destination L4 port.
	Port uint16
	// L7 keeps only L7 flows of this kind: "http" or "dns" ("" = any flow).
	L7 string
	// DNSName keeps DNS flows whose query matches this pattern (policy
	// matchPattern syntax); Rcodes keeps DNS flows answered with one of
	// these rcodes (filter_dns.go). Set them with WithDNS.
	DNSName string
	Rcodes  []uint32
	// DeniedRcode is the rcode of queries the DNS proxy denied (default
	// DeniedRcode, REFUSED).
	DeniedRcode uint32
	dnsName     *fqdn.Matcher // compiled DNSName (WithDNS)
}

// Validate checks the filter's enumerated fields.
func (fl Filter) Validate() error {
	switch strings.ToLower(fl.L7) {
	case "", "http", "dns":
	default:
		return fmt.Errorf("validate filter: l7 %q: want http or dns", fl.L7)
	}
	return fl.validateDNS()
}

// Match reports whether f passes the filter.
func (fl *Filter) Match(f *Flow) bool {
	if len(fl.Verdicts) > 0 {
		ok := false
		for _, v := range fl.Verdicts {
			if v == f.Verdict {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if fl.Namespace != "" && f.Source.Namespace != fl.Namespace && f.Destination.Namespace != fl.Namespace {
		return false
	}
	if fl.Pod != "" && !matchPod(fl.Pod, &f.Source) && !matchPod(fl.Pod, &f.Destination) {
		return false
	}
	if fl.Protocol != "" && !strings.EqualFold(fl.Protocol, f.Protocol()) && !strings.EqualFold(fl.Protocol, f.L4.Protocol.String()) {
		return false
	}
	if fl.Port != 0 && f.L4.SourcePort != fl.Port && f.L4.DestinationPort != fl.Port {
		return false
	}
	if fl.L7 != "" {
		if f.L7 == nil {
			return false
		}
		switch strings.ToLower(fl.L7) {
		case "http":
			if f.L7.HTTP == nil {
				return false
			}
		case "dns":
			if f.L7.DNS == nil {
				return false
			}
		default:
			return false
		}
	}
	return fl.matchDNS(f)
}

func matchPod(want string, ep *Endpoint) bool {
	if ns, pod, ok := strings.Cut(want, "/"); ok {
		return ep.Namespace == ns && ep.PodName == pod
	}
	return ep.PodName == want
}
