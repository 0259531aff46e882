package identity

// This file owns the derivation of a pod's security label set, the object
// name of a label set and the conversion between policy.Labels and the
// Identity object's spec.labels map.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"strings"

	"github.com/moatnet/moat/policy"
)

// DefaultExcludedLabels are the pod labels that change with every rollout or
// name a single pod; keeping them would give each ReplicaSet generation (or
// each StatefulSet pod) its own identity.
var DefaultExcludedLabels = []string{
	"pod-template-hash",
	"controller-revision-hash",
	"pod-template-generation",
	"controller-uid",
	"batch.kubernetes.io/controller-uid",
	"statefulset.kubernetes.io/pod-name",
	"apps.kubernetes.io/pod-index",
	"batch.kubernetes.io/job-completion-index",
}

// LabelFilter says which pod labels are not security-relevant. An entry is
// an exact label key, or a prefix when it ends in "*".
type LabelFilter struct {
	// Exclude lists the keys (or "prefix*") to drop. Nil means
	// DefaultExcludedLabels; an empty, non-nil slice keeps every label.
	Exclude []string
}

// Validate checks the filter's entries.
func (f LabelFilter) Validate() error {
	for i, e := range f.Exclude {
		if strings.TrimSuffix(e, "*") == "" {
			return fmt.Errorf("identity label filter: exclude[%d]: empty key", i)
		}
		if strings.Contains(strings.TrimSuffix(e, "*"), "*") {
			return fmt.Errorf("identity label filter: exclude[%d] %q: '*' is allowed only at the end", i, e)
		}
	}
	return nil
}

func (f LabelFilter) excluded(key string) bool {
	ex := f.Exclude
	if ex == nil {
		ex = DefaultExcludedLabels
	}
	for _, e := range ex {
		if p, ok := strings.CutSuffix(e, "*"); ok {
			if strings.HasPrefix(key, p) {
				return true
			}
		} else if key == e {
			return true
		}
	}
	return false
}

// Keep returns the pod labels the filter keeps (a new map; nil when none
// are kept). PodLabels applies it; a caller that builds a policy.Endpoint
// itself uses it to stay identical.
func (f LabelFilter) Keep(podLabels map[string]string) map[string]string {
	var kept map[string]string
	for k, v := range podLabels {
		if f.excluded(k) {
			continue
		}
		if kept == nil {
			kept = make(map[string]string, len(podLabels))
		}
		kept[k] = v
	}
	return kept
}

// PodLabels returns the security label set of a pod in namespace ns: its
// labels without those f excludes, its namespace, and its namespace's
// labels (policy.EndpointLabels). The agent (endpoints and ipcache) and
// moat-operator (identity GC) both use it, so they agree on which identity a
// pod needs.
func PodLabels(ns string, podLabels, nsLabels map[string]string, f LabelFilter) policy.Labels {
	kept := f.Keep(podLabels)
	var nsp *policy.Namespace
	if nsLabels != nil {
		nsp = &policy.Namespace{Name: ns, Labels: nsLabels}
	}
	return policy.EndpointLabels(policy.Endpoint{Namespace: ns, Labels: kept}, nsp)
}

// ObjectName is the name of the Identity object of a label set: "ls-" and
// the first 32 hex digits (128 bits) of the SHA-256 of its canonical string
// (policy.Labels.Key).
func ObjectName(ls policy.Labels) string {
	sum := sha256.Sum256([]byte(ls.Key()))
	return "ls-" + hex.EncodeToString(sum[:16])
}

// SpecLabels renders a label set as the Identity's spec.labels map:
// "source:key" → value.
func SpecLabels(ls policy.Labels) map[string]string {
	out := make(map[string]string, len(ls))
	for _, l := range ls {
		out[l.Source+":"+l.Key] = l.Value
	}
	return out
}

// LabelsFromSpec parses an Identity's spec.labels map back into a label set.
// Every key must carry a source prefix.
func LabelsFromSpec(m map[string]string) (policy.Labels, error) {
	out := make(policy.Labels, len(m))
	for k, v := range m {
		src, key := policy.ParseLabelKey(k)
		if src == "" || key == "" {
			return nil, fmt.Errorf("label %q: want \"source:key\" with a known source", k)
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("label %q: key %q appears with two sources", k, key)
		}
		out[key] = policy.Label{Source: src, Key: key, Value: v}
	}
	return out, nil
}

func sameSpecLabels(a, b map[string]string) bool { return maps.Equal(a, b) }
