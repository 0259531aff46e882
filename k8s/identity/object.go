package identity

// This file owns the Identity object as the allocator sees it: its
// resource, and the conversion from the unstructured form the dynamic client
// and informer carry.

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/moatnet/moat/api/v1alpha1"
	"github.com/moatnet/moat/policy"
)

// Resource is the cluster-scoped Identity resource (moat.io/v1alpha1).
var Resource = v1alpha1.GroupVersion.WithResource("identities")

// Kind is the Identity kind.
const Kind = v1alpha1.KindIdentity

// AnnotationUnusedSince marks an identity that moat-operator found unused,
// with the RFC 3339 time (UTC, fractional seconds allowed) it first did. An agent that uses the identity
// removes it; the operator deletes the identity once the grace period has
// passed, with a precondition on the resourceVersion it saw.
const AnnotationUnusedSince = "moat.io/unused-since"

// Object is the part of an Identity the allocator and the operator read.
type Object struct {
	Name            string
	UID             types.UID
	ResourceVersion string
	ID              policy.ID
	// SpecLabels is spec.labels as stored ("source:key" → value).
	SpecLabels map[string]string
	// UnusedSince is the value of AnnotationUnusedSince, "" when absent.
	UnusedSince string
	// Created is the creation timestamp.
	Created time.Time
}

// Labels parses SpecLabels.
func (o *Object) Labels() (policy.Labels, error) { return LabelsFromSpec(o.SpecLabels) }

// FromUnstructured reads an Identity.
func FromUnstructured(u *unstructured.Unstructured) (*Object, error) {
	id, ok, err := unstructured.NestedInt64(u.Object, "spec", "id")
	if err != nil || !ok {
		return nil, fmt.Errorf("identity %s: spec.id: missing or not an integer", u.GetName())
	}
	if id < v1alpha1.MinIdentity || id > v1alpha1.MaxIdentity {
		return nil, fmt.Errorf("identity %s: spec.id %d: outside %d..%d", u.GetName(), id, v1alpha1.MinIdentity, v1alpha1.MaxIdentity)
	}
	ls, _, err := unstructured.NestedStringMap(u.Object, "spec", "labels")
	if err != nil {
		return nil, fmt.Errorf("identity %s: spec.labels: %w", u.GetName(), err)
	}
	return &Object{
		Name:            u.GetName(),
		UID:             u.GetUID(),
		ResourceVersion: u.GetResourceVersion(),
		ID:              policy.ID(id),
		SpecLabels:      ls,
		UnusedSince:     u.GetAnnotations()[AnnotationUnusedSince],
		Created:         u.GetCreationTimestamp().Time,
	}, nil
}

// NewUnstructured builds the Identity object for a label set and number.
func NewUnstructured(ls policy.Labels, id policy.ID) *unstructured.Unstructured {
	labels := make(map[string]any, len(ls))
	for k, v := range SpecLabels(ls) {
		labels[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.APIVersion,
		"kind":       Kind,
		"metadata":   map[string]any{"name": ObjectName(ls)},
		"spec":       map[string]any{"id": int64(id), "labels": labels},
	}}
	return u
}
