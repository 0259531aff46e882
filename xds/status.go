package xds

import (
	"slices"
	"strings"
)

// NodeStatus is what the xDS server knows about one node, for `moat status`.
type NodeStatus struct {
	Node string
	// Subscribed: a stream of this process identified itself as this node.
	Subscribed bool
	// Connected: the node has at least one open stream.
	Connected bool
	Streams   int
	// Version is the latest version set with SetResources ("" if none).
	Version string
	Types   []TypeStatus // by type URL
}

// TypeStatus is the state of one resource type of a node.
type TypeStatus struct {
	TypeURL string
	Sent    string // last version sent
	ACKed   string // latest version ACKed
	// LastNACK is the latest rejection, nil if none. It stays after a later
	// ACK; compare its version with ACKed.
	LastNACK *NACK
}

// Status returns every node known to the server (it has a snapshot or opened
// a stream), sorted by node name.
func (s *Server) Status() []NodeStatus {
	t := s.tr
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]NodeStatus, 0, len(t.nodes))
	for id, n := range t.nodes {
		ns := NodeStatus{
			Node:       id,
			Subscribed: n.subscribed,
			Connected:  n.streams > 0,
			Streams:    n.streams,
			Version:    n.current,
			Types:      make([]TypeStatus, 0, len(n.types)),
		}
		for typeURL, ts := range n.types {
			st := TypeStatus{TypeURL: typeURL, Sent: ts.sent, ACKed: ts.acked}
			if ts.nack != nil {
				nack := *ts.nack
				st.LastNACK = &nack
			}
			ns.Types = append(ns.Types, st)
		}
		slices.SortFunc(ns.Types, func(a, b TypeStatus) int { return strings.Compare(a.TypeURL, b.TypeURL) })
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return strings.Compare(a.Node, b.Node) })
	return out
}
