// Package rbaceval is the reference evaluator of the RBAC configuration the
// envoy translation emits: a small, obviously-correct reading of Envoy's
// RBAC semantics (first matching policy, OR of permissions and principals,
// whole-value regex matches). envoy's semantic tests judge translations with
// it, and l7proxy's differential test holds l7proxy's compiled RBAC engine
// to it. It is pure, used only by tests, and must never grow a matcher that
// Envoy does not have.
package rbaceval
