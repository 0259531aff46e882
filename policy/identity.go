package policy

import "fmt"

// ID is a numeric security identity. The same label set has the same ID on
// every node.
type ID uint32

// Reserved identities. ID 0 also means "any identity" in a Plan entry.
const (
	IDUnknown       ID = 0
	IDHost          ID = 1
	IDWorld         ID = 2
	IDRemoteNode    ID = 6
	IDKubeAPIServer ID = 7

	// IDAny is the wildcard remote identity in Plan entries.
	IDAny ID = 0

	// IDFirstAllocated is the first identity given to a label set.
	IDFirstAllocated ID = 256
	// IDLocalFlag marks node-local identities (CIDR and FQDN prefixes).
	IDLocalFlag ID = 1 << 24
	// IDTransitFlag marks the datapath's transit identities: while one
	// Sync runs, an address whose identity changes is parked on one, whose
	// entries go from the old identity's to the new one's (see
	// datapath/syncplan.go). No Plan ever holds one.
	IDTransitFlag ID = 1 << 27
)

// IsLocal reports whether the identity is node-local (CIDR/FQDN).
func (id ID) IsLocal() bool { return id&IDLocalFlag != 0 }

// IsReserved reports whether the identity is one of the reserved ones.
func (id ID) IsReserved() bool { return id < IDFirstAllocated }

// String names reserved identities and prints others as numbers.
func (id ID) String() string {
	switch id {
	case IDUnknown:
		return "unknown"
	case IDHost:
		return "host"
	case IDWorld:
		return "world"
	case IDRemoteNode:
		return "remote-node"
	case IDKubeAPIServer:
		return "kube-apiserver"
	}
	return fmt.Sprintf("%d", uint32(id))
}

// Identity is a numeric identity with the label set it stands for.
type Identity struct {
	ID     ID     `json:"id"`
	Labels Labels `json:"labels"`
}

// ReservedIdentities returns the reserved identities with their labels.
func ReservedIdentities() []Identity {
	mk := func(id ID, name string) Identity {
		return Identity{ID: id, Labels: Labels{name: {Source: SourceReserved, Key: name}}}
	}
	return []Identity{
		mk(IDHost, "host"),
		mk(IDWorld, "world"),
		mk(IDRemoteNode, "remote-node"),
		mk(IDKubeAPIServer, "kube-apiserver"),
	}
}

// Allocator hands out identities for label sets. Implementations must give
// the same ID to the same label set for as long as it is referenced, and
// must be safe for use by one goroutine at a time (the compiler serialises).
type Allocator interface {
	// Allocate returns the identity of the label set, allocating one if
	// needed, and takes a reference on it.
	Allocate(ls Labels) (ID, error)
	// Release drops a reference taken by Allocate; the ID may be reused once
	// unreferenced.
	Release(id ID) error
	// Lookup returns the labels of an allocated identity.
	Lookup(id ID) (Labels, bool)
}
