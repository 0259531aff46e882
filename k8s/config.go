package k8s

import (
	"fmt"
	"strings"
)

// AnnotationInterface names, on a local pod, the host-side interface of
// its veth for the agent to adopt and attach its programs to. Until the CNI
// hands pods to the agent (the next step), a local pod without it is
// compiled into the Plan and the ipcache but has no interface to enforce
// on.
const AnnotationInterface = "moat.io/interface"

// DefaultExcludedLabels are the pod labels left out of security label sets:
// they change with every rollout and would give each ReplicaSet or revision
// an identity of its own.
var DefaultExcludedLabels = []string{
	"pod-template-hash",
	"controller-revision-hash",
	"pod-template-generation",
	"statefulset.kubernetes.io/pod-name",
	"apps.kubernetes.io/pod-index",
	"batch.kubernetes.io/controller-uid",
	"batch.kubernetes.io/job-name",
	"controller-uid",
	"job-name",
}

// Config configures a Source.
type Config struct {
	// NodeName is this node: pods scheduled to it are local endpoints, its
	// addresses the host's.
	NodeName string
	// ExcludedLabels are label keys left out of pod and namespace label
	// sets before they become identities; a key ending in "*" is a prefix.
	// nil means DefaultExcludedLabels; an empty list excludes nothing.
	ExcludedLabels []string
	// ConfigMapNamespace/ConfigMapName name the agent's ConfigMap, watched
	// when both are set (ConfigMap returns its data).
	ConfigMapNamespace, ConfigMapName string
}

// Validate reports what is wrong, naming the field.
func (c Config) Validate() error {
	if c.NodeName == "" {
		return fmt.Errorf("nodeName: required in Kubernetes mode")
	}
	for i, k := range c.ExcludedLabels {
		if strings.TrimSuffix(k, "*") == "" {
			return fmt.Errorf("excludedLabels[%d]: empty key", i)
		}
	}
	if (c.ConfigMapNamespace == "") != (c.ConfigMapName == "") {
		return fmt.Errorf("configMap: want both a namespace and a name")
	}
	return nil
}

// labelFilter drops the excluded label keys.
type labelFilter struct {
	exact    map[string]bool
	prefixes []string
}

func newLabelFilter(keys []string) labelFilter {
	if keys == nil {
		keys = DefaultExcludedLabels
	}
	f := labelFilter{exact: map[string]bool{}}
	for _, k := range keys {
		if p, ok := strings.CutSuffix(k, "*"); ok {
			f.prefixes = append(f.prefixes, p)
			continue
		}
		f.exact[k] = true
	}
	return f
}

func (f labelFilter) excluded(k string) bool {
	if f.exact[k] {
		return true
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// apply returns labels without the excluded keys (nil for none left).
func (f labelFilter) apply(labels map[string]string) map[string]string {
	var out map[string]string
	for k, v := range labels {
		if f.excluded(k) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(labels))
		}
		out[k] = v
	}
	return out
}
