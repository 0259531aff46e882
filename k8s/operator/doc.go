// Package operator is moat-operator's logic: the cluster-wide work that no
// single node should own. One replica leads (a coordination.k8s.io Lease in
// the operator's namespace) and runs, while it leads:
//
//   - identity garbage collection: an Identity whose label set no pod has
//     (identity.PodLabels, the same derivation as the agents) is marked with
//     identity.AnnotationUnusedSince and, once still unused after the grace
//     period, deleted with a precondition on the resourceVersion it saw, so
//     an agent that starts using it meanwhile (and removes the mark) wins;
//   - policy status: every moat.io NetworkPolicy and ClusterwideNetworkPolicy
//     is validated exactly as `moat policy validate` does (package policy),
//     and its status gets a Valid condition with the same field path and
//     message, plus an Event on the object when the verdict changes.
//
// Every replica serves its moat_operator_* metrics. The agents never depend
// on the operator: it allocates nothing and enforces nothing.
package operator
