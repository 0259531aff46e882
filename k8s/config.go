package k8s

import (
	"fmt"

	"github.com/moatnet/moat/k8s/identity"
)

// AnnotationInterface names, on a local pod, the host-side interface of
// its veth for the agent to adopt and attach its programs to, when the
// agent is not the node's CNI (Config.Attachments nil). Without it such a
// pod is compiled into the Plan and the ipcache but has no interface to
// enforce on. With moat-cni, the attachments say where local pods are.
const AnnotationInterface = "moat.io/interface"

// Config configures a Source.
type Config struct {
	// NodeName is this node: pods scheduled to it are local endpoints, its
	// addresses the host's.
	NodeName string
	// ExcludedLabels are pod label keys left out of security label sets
	// (identity.LabelFilter: a key ending in "*" is a prefix; nil means
	// identity.DefaultExcludedLabels, an empty list excludes nothing). The
	// operator's identity GC must use the same filter.
	ExcludedLabels []string
	// ConfigMapNamespace/ConfigMapName name the agent's ConfigMap, watched
	// when both are set (ConfigMap returns its data).
	ConfigMapNamespace, ConfigMapName string
	// Attachments, when set, is where local pods' addresses come from
	// (moat-cni, see attachments.go): never from a local pod's status.
	Attachments PodAttachments
}

// Validate reports what is wrong, naming the field.
func (c Config) Validate() error {
	if c.NodeName == "" {
		return fmt.Errorf("nodeName: required in Kubernetes mode")
	}
	if err := (identity.LabelFilter{Exclude: c.ExcludedLabels}).Validate(); err != nil {
		return err
	}
	if (c.ConfigMapNamespace == "") != (c.ConfigMapName == "") {
		return fmt.Errorf("configMap: want both a namespace and a name")
	}
	return nil
}

// labelFilter keeps the security-relevant pod labels, exactly as
// identity.PodLabels does (the operator counts identities in use with it).
type labelFilter struct{ f identity.LabelFilter }

func newLabelFilter(keys []string) labelFilter {
	return labelFilter{identity.LabelFilter{Exclude: keys}}
}

// apply returns a pod's labels without the excluded keys (nil for none).
func (f labelFilter) apply(labels map[string]string) map[string]string {
	return f.f.Keep(labels)
}
