// Package agent wires moat's components into the node agent and runs them:
// policy sources → incremental compiler → endpoints and BPF maps, Envoy
// resources over xDS (redirects written only after the proxy ACKed them),
// datapath events and proxy access logs → flows → Hubble metrics, and the
// local API that the moat CLI talks to.
//
// Ordering (reconcile.go): programs are attached before an endpoint is in
// the maps; every map (ipcache, L3/L4 allows and denies) is written at once
// and never waits on the proxy; a redirect entry carries its proxy port
// only once the proxy has ACKed the listener (until then, and after a NACK
// or ACKTimeout, it drops). The reconciler drives the datapath, endpoint
// manager and xDS server through small interfaces (parts.go).
//
// Service translation (services.go, with serviceTranslation: true): the
// datapath's sock_addr programs get the Service table from k8s.ServiceWatch
// (Kubernetes mode, written only once it synced) or the config's services
// list, and their scope (the netns whose sockets they translate) from the
// endpoints reconcile attached.
//
// moat-cni (cni.go, ipam.go, cniinstall.go; Kubernetes mode): the agent
// makes each pod's routed veth in the runtime's netns with the standalone
// endpoint code, allocates its address from the node's pod CIDR, and
// answers ADD only after a reconcile attached the programs and wrote the
// maps for it. noderoutes.go routes other nodes' pod CIDRs via their
// InternalIPs.
//
// One agent per pin root (lock.go): Run takes an exclusive flock before it
// touches any pin; a second agent, or `moat-agent cleanup`, fails naming
// the holder's pid.
//
// The agent owns lifecycles and ordering, nothing else: it holds no policy
// semantics (policy), no kernel details (datapath) and no Envoy knowledge
// (envoy, xds). Components meet here through their public APIs only.
package agent
