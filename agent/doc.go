// Package agent wires moat's components into the node agent and runs them:
// policy sources → incremental compiler → endpoints and BPF maps, Envoy
// resources over xDS (redirects written only after the proxy ACKed them),
// datapath events and proxy access logs → flows → Hubble metrics, and the
// local API that the moat CLI talks to.
//
// The agent owns lifecycles and ordering, nothing else: it holds no policy
// semantics (policy), no kernel details (datapath) and no Envoy knowledge
// (envoy, xds). Components meet here through their public APIs only.
package agent
