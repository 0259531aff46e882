package policy

import (
	"fmt"
	"sort"
	"strings"
)

// Label sources, written as the prefix of a label key ("k8s:app").
const (
	SourceK8s      = "k8s"
	SourceAny      = "any"
	SourceReserved = "reserved"
	SourceCIDR     = "cidr"
	SourceFQDN     = "fqdn"
)

// Well-known label keys.
const (
	// LabelNamespace is the label every endpoint carries with its namespace.
	LabelNamespace = "io.kubernetes.pod.namespace"
	// LabelNamespaceLabelsPrefix prefixes the labels of an endpoint's
	// namespace, so that namespaceSelector can match them.
	LabelNamespaceLabelsPrefix = "io.cilium.k8s.namespace.labels."
	// LabelPolicyCluster names the cluster an endpoint belongs to.
	LabelPolicyCluster = "io.cilium.k8s.policy.cluster"
)

// Label is one label: a source, a key and a value.
type Label struct {
	Source string `json:"source"`
	Key    string `json:"key"`
	Value  string `json:"value"`
}

// String renders the label as "source:key=value".
func (l Label) String() string {
	s := l.Source + ":" + l.Key
	if l.Value != "" {
		s += "=" + l.Value
	}
	return s
}

// ParseLabelKey splits "k8s:app" into source "k8s" and key "app". A key
// without a known source prefix has source "" (meaning any source when
// matching, k8s when attached to an endpoint).
func ParseLabelKey(s string) (source, key string) {
	if i := strings.IndexByte(s, ':'); i > 0 {
		switch src := s[:i]; src {
		case SourceK8s, SourceAny, SourceReserved, SourceCIDR, SourceFQDN, "container", "unspec":
			return src, s[i+1:]
		}
	}
	return "", s
}

// Labels is a set of labels keyed by label key (without source). Two labels
// with the same key and different sources cannot coexist in one set; the
// endpoint builders never produce that.
type Labels map[string]Label

// NewLabels builds a label set from "key: value" pairs whose keys may carry a
// source prefix; keys without one get defaultSource.
func NewLabels(defaultSource string, kv map[string]string) Labels {
	out := make(Labels, len(kv))
	for k, v := range kv {
		src, key := ParseLabelKey(k)
		if src == "" || src == SourceAny {
			src = defaultSource
		}
		out[key] = Label{Source: src, Key: key, Value: v}
	}
	return out
}

// Has reports whether the set holds key (with any source if source is "" or
// "any") and returns its value.
func (ls Labels) Get(source, key string) (string, bool) {
	l, ok := ls[key]
	if !ok {
		return "", false
	}
	if source != "" && source != SourceAny && source != l.Source {
		return "", false
	}
	return l.Value, true
}

// Sorted returns the labels ordered by source, key and value.
func (ls Labels) Sorted() []Label {
	out := make([]Label, 0, len(ls))
	for _, l := range ls {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Source != out[j].Source {
			return out[i].Source < out[j].Source
		}
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].Value < out[j].Value
	})
	return out
}

// Key is a canonical string of the whole set, used to give one identity to
// every endpoint with the same security-relevant labels.
func (ls Labels) Key() string {
	var b strings.Builder
	for i, l := range ls.Sorted() {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(l.String())
	}
	return b.String()
}

// Strings renders the labels as sorted "source:key=value" strings.
func (ls Labels) Strings() []string {
	sorted := ls.Sorted()
	out := make([]string, len(sorted))
	for i, l := range sorted {
		out[i] = l.String()
	}
	return out
}

// String implements fmt.Stringer.
func (ls Labels) String() string { return fmt.Sprintf("[%s]", ls.Key()) }
