package flow

import (
	"fmt"
	"slices"
	"strings"
)

// contextLabelNames are the labelsContext labels in the fixed order Hubble
// emits them, whatever order the option lists them in.
var contextLabelNames = []string{
	"source_ip",
	"source_pod",
	"source_namespace",
	"source_workload",
	"source_app",
	"destination_ip",
	"destination_pod",
	"destination_namespace",
	"destination_workload",
	"destination_app",
	"traffic_direction",
}

// contextLabel indexes contextLabelNames.
type contextLabel uint8

const (
	ctxSourceIP contextLabel = iota
	ctxSourcePod
	ctxSourceNamespace
	ctxSourceWorkload
	ctxSourceApp
	ctxDestinationIP
	ctxDestinationPod
	ctxDestinationNamespace
	ctxDestinationWorkload
	ctxDestinationApp
	ctxTrafficDirection
)

// contextID is a sourceContext/destinationContext identifier.
type contextID uint8

const (
	ctxIDIdentity contextID = iota
	ctxIDNamespace
	ctxIDPod
	ctxIDPodShort
	ctxIDPodName
	ctxIDIP
	ctxIDReservedIdentity
	ctxIDWorkloadName
	ctxIDApp
)

var contextIDNames = []string{"identity", "namespace", "pod", "pod-short", "pod-name", "ip", "reserved-identity", "workload-name", "app"}

// contextOptions are a handler's context labels: the labelsContext labels in
// fixed order, then "source" and "destination" when sourceContext and
// destinationContext are set (each a "|"-separated list of identifiers, the
// first non-empty one wins), as in Hubble.
type contextOptions struct {
	labels      []contextLabel
	source      []contextID
	destination []contextID
}

func parseContextOptions(opts map[string]string) (*contextOptions, error) {
	c := &contextOptions{}
	if v, ok := opts[optLabelsContext]; ok {
		want := map[string]bool{}
		for l := range strings.SplitSeq(v, ",") {
			l = strings.TrimSpace(l)
			if !slices.Contains(contextLabelNames, l) {
				return nil, fmt.Errorf("labelsContext: unknown label %q (known: %s)", l, strings.Join(contextLabelNames, ", "))
			}
			want[l] = true
		}
		for i, name := range contextLabelNames {
			if want[name] {
				c.labels = append(c.labels, contextLabel(i))
			}
		}
	}
	var err error
	if v, ok := opts[optSourceContext]; ok {
		if c.source, err = parseContextIDs(v); err != nil {
			return nil, fmt.Errorf("sourceContext: %w", err)
		}
	}
	if v, ok := opts[optDestinationContext]; ok {
		if c.destination, err = parseContextIDs(v); err != nil {
			return nil, fmt.Errorf("destinationContext: %w", err)
		}
	}
	return c, nil
}

func parseContextIDs(v string) ([]contextID, error) {
	var ids []contextID
	for s := range strings.SplitSeq(v, "|") {
		i := slices.Index(contextIDNames, strings.ToLower(strings.TrimSpace(s)))
		if i < 0 {
			return nil, fmt.Errorf("unknown context %q (known: %s)", s, strings.Join(contextIDNames, ", "))
		}
		ids = append(ids, contextID(i))
	}
	return ids, nil
}

// names returns the context label names in emission order.
func (c *contextOptions) names() []string {
	out := make([]string, 0, len(c.labels)+2)
	for _, l := range c.labels {
		out = append(out, contextLabelNames[l])
	}
	if len(c.source) > 0 {
		out = append(out, "source")
	}
	if len(c.destination) > 0 {
		out = append(out, "destination")
	}
	return out
}

// appendValues appends the context label values of f to dst, in the order of
// names. invert swaps source and destination (for metrics that count
// response flows, whose source is the server).
func (c *contextOptions) appendValues(dst []string, f *Flow, invert bool) []string {
	src, dstEp := &f.Source, &f.Destination
	if invert {
		src, dstEp = dstEp, src
	}
	for _, l := range c.labels {
		var v string
		switch l {
		case ctxSourceIP:
			v = addrString(src)
		case ctxSourcePod:
			v = src.PodName
		case ctxSourceNamespace:
			v = src.Namespace
		case ctxSourceWorkload:
			v = src.Workload
		case ctxSourceApp:
			v = src.App
		case ctxDestinationIP:
			v = addrString(dstEp)
		case ctxDestinationPod:
			v = dstEp.PodName
		case ctxDestinationNamespace:
			v = dstEp.Namespace
		case ctxDestinationWorkload:
			v = dstEp.Workload
		case ctxDestinationApp:
			v = dstEp.App
		case ctxTrafficDirection:
			v = f.TrafficDirection.String()
		}
		dst = append(dst, v)
	}
	if len(c.source) > 0 {
		dst = append(dst, firstContextValue(c.source, src))
	}
	if len(c.destination) > 0 {
		dst = append(dst, firstContextValue(c.destination, dstEp))
	}
	return dst
}

func addrString(ep *Endpoint) string {
	if !ep.IP.IsValid() {
		return ""
	}
	return ep.IP.String()
}

func firstContextValue(ids []contextID, ep *Endpoint) string {
	for _, id := range ids {
		if v := contextValue(id, ep); v != "" {
			return v
		}
	}
	return ""
}

func contextValue(id contextID, ep *Endpoint) string {
	switch id {
	case ctxIDIdentity:
		return strings.Join(ep.Labels, ",")
	case ctxIDNamespace:
		return ep.Namespace
	case ctxIDPod:
		if ep.Namespace != "" {
			return ep.Namespace + "/" + ep.PodName
		}
		return ep.PodName
	case ctxIDPodShort:
		if ep.Namespace != "" {
			return ep.Namespace + "/" + shortPodName(ep.PodName)
		}
		return shortPodName(ep.PodName)
	case ctxIDPodName:
		return ep.PodName
	case ctxIDIP:
		return addrString(ep)
	case ctxIDReservedIdentity:
		for _, l := range ep.Labels {
			if l == "reserved:kube-apiserver" {
				return l
			}
		}
		for _, l := range ep.Labels {
			if strings.HasPrefix(l, "reserved:") {
				return l
			}
		}
	case ctxIDWorkloadName:
		return ep.Workload
	case ctxIDApp:
		return ep.App
	}
	return ""
}

// shortPodName drops up to two trailing "-[a-z0-9]+" segments (the
// ReplicaSet hash and pod suffix), keeping a non-empty prefix.
func shortPodName(name string) string {
	out := name
	for range 2 {
		i := strings.LastIndexByte(out, '-')
		if i <= 0 || i == len(out)-1 || !isLowerAlnum(out[i+1:]) {
			break
		}
		out = out[:i]
	}
	return out
}

func isLowerAlnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
