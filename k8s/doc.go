// Package k8s is the agent's Kubernetes source: client-go shared informers
// over the objects moat reads (pods, namespaces, nodes, the EndpointSlices
// of default/kubernetes, the five policy kinds, the agent's ConfigMap), with
// transforms that keep only the fields moat reads, turned into the policy
// model: local pods become endpoints, remote pods remote endpoints (ipcache
// peers), nodes the host and remote-node addresses, the apiserver's
// EndpointSlices the kube-apiserver addresses, and policy objects Policies
// parsed by policy.ParseObject (the same field paths and reasons as
// `moat policy validate`).
//
// It is event-driven: informer handlers only record which objects changed
// and wake the consumer (Changed); the consumer calls Drain from its own
// goroutine, which reads the current objects from the informers' caches and
// applies the differences to a Sink (the policy.Compiler). An object that
// did not change (a relist after an apiserver restart or a watch expiry)
// changes nothing in the Sink.
//
// Beside the Source, ServiceWatch (services.go) watches Services and
// their EndpointSlices in every namespace and gives the table of ClusterIP
// frontends with their ready backends, for the datapath's socket-level
// Service translation.
//
// It never writes to the API (identity allocation and policy status belong
// to k8s/identity and the operator) and never touches the kernel.
package k8s
