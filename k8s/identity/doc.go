// Package identity gives every security label set one cluster-wide number
// through the Kubernetes API, and owns the one function that derives a
// pod's security labels (PodLabels), so that the agents and moat-operator
// agree on what "the label set of a pod" is.
//
// Guarantees, both enforced by the apiserver and not by any single agent:
//
//   - One number per label set: an Identity object is named "ls-" plus a
//     hash of the label set's canonical string, so when agents race, exactly
//     one create succeeds and every other agent reads the winner's number
//     (a hash collision, i.e. an object with our name and other labels, is
//     an error, never a silent share).
//   - No number shared by two label sets: numbers come from a counter
//     ConfigMap updated with optimistic concurrency, never below the highest
//     number this agent has seen; after a create, the creator waits until its
//     informer holds the new object (a watch delivers objects in etcd order,
//     so every older Identity is then visible) and, should another Identity
//     hold the same number (only possible when the counter was reset), it
//     deletes its own object and allocates again. An identity is never used
//     while this agent's cache shows its number on another object.
//
// The package never depends on moat-operator: allocation works with the
// operator down. Release only drops the agent's in-memory reference;
// deleting unused identities is the operator's garbage collector, which
// marks a candidate with AnnotationUnusedSince and deletes it with a
// resourceVersion precondition. An agent holding a reference removes that
// annotation (an update, which makes the operator's delete fail), and
// re-creates an identity it uses if it is deleted anyway.
package identity
