// Package datapath owns moat's kernel datapath: the bpf2go output for the
// programs in bpf/ (moat_bpfel.go and moat_bpfel.o, committed), loading them
// with maps pinned under a root (default /sys/fs/bpf/moat), attaching them to
// endpoints' host-side veths (TCX, falling back to legacy tc clsact filters),
// writing a policy.Plan into the maps (Sync), reading events from the ringbuf
// and counters from per-CPU maps, and removing everything again (Cleanup).
// The endpoint plumbing (netns, veth, routes, proxy routing rule) lives in
// endpoint*.go and netns*.go; pinnedlinks.go keeps the pinned TCX links
// that let enforcement survive restarts, and ringbuf.go reads the events
// ringbuf. Two more programs live beside the tc ones:
// the cgroup sock_ops program that reports TCP health (unanswered SYNs,
// retransmissions, RTT, resets: sockops*.go, bpf/sockops.c) and the XDP
// prefilter that drops a CIDR deny list before the stack (prefilter*.go,
// bpf/xdp.c). A third tc program, from_uplink, sits at tc ingress of the
// node's uplinks (SetUplinks, uplink.go): it hands the replies of a proxy's
// upstream legs that keep a client pod's address and arrive from outside
// the node to the proxy's socket, and passes everything else untouched.
// Service translation (sockaddr.go, services.go, bpf/sockaddr.c) is a set
// of cgroup sock_addr programs: connect and sendmsg turn a Service
// frontend into one of its backends at the socket, recvmsg and getpeername
// show the frontend again, for sockets in the network namespaces of the
// scope only; the tc programs then see the backend's address and judge
// policy on its identity. The table is a pure spec (Services) that a
// planner writes in an order that never leaves a frontend without the
// backends it has before and after.
//
// Maps, in the order a packet meets them (bpf/maps.h): moat_ct, one LRU
// entry per flow and endpoint that the flow's packets and its replies both
// find with one lookup (the tuple in canonical order, bpf/ct.h);
// moat_endpoints; moat_ipcache_h then the moat_ipcache trie (address →
// identity); moat_policy_h (entries for one port and for every port) then,
// only where a direction has port ranges, the moat_policy trie;
// moat_local_ep (a local endpoint's address -> the ifindex of its host veth)
// for from_endpoint's local delivery: a packet of a tracked flow to another
// local endpoint whose own CT entry lets it in, checked against the current
// generation, is redirected to that endpoint's side of the veth
// (bpf_redirect_peer) without the host's routing or to_endpoint. Counters
// are per-CPU arrays indexed by slot; a rule index freed by a Sync is
// zeroed in the background before a new rule takes it.
//
// Enforcement never stops on its own account: a restarted agent adopts the
// pinned maps and links and swaps programs in place (link.Update); over
// pinned maps of another layout (an upgrade), Open builds new maps beside
// them, the old programs keep enforcing until the first Sync has filled
// the new maps, and then the links swap to the new programs and the new
// maps' pins replace the old (upgrade.go, with the moat_ct conversions in
// upgrade_convert.go). Sync is make-before-break: after each of its map
// writes every packet's decision is its decision under the old Plan or
// under the new one (syncplan.go computes the ordered writes, purely, and
// states why; mapsync.go applies them); a redirect without a proxy
// listener drops (fail closed).
//
// A flow's entry lives as long as its packets keep coming (CT lifetimes in
// Config); the programs never delete it when the flow ends. A TCP SYN on
// the tuple of a flow that is closing (a client reusing its port) starts a
// new flow, decided afresh, in the old entry's place. ConntrackGC, which
// the agent runs periodically, deletes expired entries, so that the LRU
// need not evict live flows for new ones, and ConntrackStats measures how
// full of live flows the map is (conntrack.go).
//
// Fragments: a first fragment stores its datagram's ports in moat_frags
// (bpf/frag.h) and the later fragments are policied as packets of that
// flow. A later fragment whose first fragment was not seen (lost, or
// overtaken) has no ports and is decided on its own by the entries that
// cover every port of its protocol: an explicit deny drops it, an allow
// passes it, anything else in an enforced direction drops it with
// DropUnsupported (so do redirects: a proxy cannot take a fragment). An
// IPv6 extension header chain the parser cannot follow to its upper-layer
// header (more than 8 headers) is dropped with DropUnsupported as well.
//
// The datapath must never decide policy itself (that is the policy
// compiler's job), never import dnsproxy, and never run iptables or shell
// commands.
//
// Endpoint id: the ifindex of the endpoint's host-side veth. The programs
// read it from skb->ifindex, so one loaded program serves every endpoint.
package datapath
