package policy

import (
	"net/netip"
	"sort"
)

// compile_ipcache.go maintains the Plan's ipcache and identity list
// incrementally: a change of an endpoint's identity patches one entry, a
// change of the set of prefixes rebuilds the list.

// addOwner records that endpoint k uses its addresses, in owners: the
// local endpoints' (addrOwners) or the remote ones' (remoteOwners).
func (c *Compiler) addOwner(owners map[netip.Addr]map[endpointKey]struct{}, k endpointKey, ep *Endpoint) {
	for _, a := range endpointAddrs(ep) {
		a = a.Unmap()
		m := owners[a]
		if m == nil {
			m = map[endpointKey]struct{}{}
			owners[a] = m
			c.ipcacheDirty = true
		}
		m[k] = struct{}{}
		c.ipcPatch = append(c.ipcPatch, netip.PrefixFrom(a, a.BitLen()))
	}
}

// removeOwner undoes addOwner.
func (c *Compiler) removeOwner(owners map[netip.Addr]map[endpointKey]struct{}, k endpointKey, ep *Endpoint) {
	for _, a := range endpointAddrs(ep) {
		a = a.Unmap()
		m := owners[a]
		delete(m, k)
		if len(m) == 0 {
			delete(owners, a)
			c.ipcacheDirty = true
		}
		c.ipcPatch = append(c.ipcPatch, netip.PrefixFrom(a, a.BitLen()))
	}
}

// ipcValue is the identity of a prefix in the ipcache. When a prefix has
// several owners, a local endpoint wins over a remote one, a remote one
// over the node, the node over the kube-apiserver, that over a remote
// node, and all of them over a policy CIDR; among endpoints the first by
// namespace/name (see compile_remote.go).
func (c *Compiler) ipcValue(pf netip.Prefix) (ID, bool) {
	if pf.Bits() == pf.Addr().BitLen() {
		if id, ok := c.ownerValue(pf.Addr()); ok {
			return id, true
		}
		// A learned address ranks below every owner (compile_fqdn.go).
		if id, ok := c.learnedValue(pf.Addr()); ok {
			return id, true
		}
	}
	if pf.Bits() == 0 {
		return IDWorld, true
	}
	if id, ok := c.cidrIDs[pf]; ok {
		return id, true
	}
	return 0, false
}

// ownerValue is the identity of an address that an endpoint, the node, the
// kube-apiserver or a remote node owns, in that order of precedence.
func (c *Compiler) ownerValue(a netip.Addr) (ID, bool) {
	var best *endpointKey
	for k := range c.addrOwners[a] {
		if best == nil || k.less(*best) {
			kk := k
			best = &kk
		}
	}
	if best != nil {
		return c.endpoints[*best].ident.info.id, true
	}
	if id, ok := c.remoteIdentity(a); ok {
		return id, true
	}
	for _, n := range c.node.Addresses {
		if n.Unmap() == a {
			return IDHost, true
		}
	}
	if _, ok := c.apiServers[a]; ok {
		return IDKubeAPIServer, true
	}
	if _, ok := c.remoteNodes[a]; ok {
		return IDRemoteNode, true
	}
	return 0, false
}

func (c *Compiler) syncIPCache() {
	if c.ipcacheFast {
		// LearnedDelta changed the set of prefixes.
		c.ipcacheFast = false
		c.ipcacheDirty = true
	}
	if !c.ipcacheDirty {
		for _, pf := range c.ipcPatch {
			if i, ok := c.ipcIndex[pf]; ok {
				c.ipcache[i].Identity, _ = c.ipcValue(pf)
			}
		}
		c.ipcPatch = c.ipcPatch[:0]
		return
	}
	c.ipcacheDirty = false
	c.ipcPatch = c.ipcPatch[:0]
	set := map[netip.Prefix]struct{}{
		netip.PrefixFrom(netip.IPv4Unspecified(), 0): {},
		netip.PrefixFrom(netip.IPv6Unspecified(), 0): {},
	}
	for pf := range c.cidrIDs {
		set[pf] = struct{}{}
	}
	for _, a := range c.node.Addresses {
		if a.IsValid() {
			set[netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())] = struct{}{}
		}
	}
	for _, m := range []map[netip.Addr]map[endpointKey]struct{}{c.addrOwners, c.remoteOwners} {
		for a := range m {
			set[netip.PrefixFrom(a, a.BitLen())] = struct{}{}
		}
	}
	for _, m := range []map[netip.Addr]struct{}{c.apiServers, c.remoteNodes} {
		for a := range m {
			set[netip.PrefixFrom(a, a.BitLen())] = struct{}{}
		}
	}
	c.addLearnedPrefixes(set)
	c.ipcache = make([]IPCacheEntry, 0, len(set))
	for pf := range set {
		id, _ := c.ipcValue(pf)
		c.ipcache = append(c.ipcache, IPCacheEntry{Prefix: pf, Identity: id})
	}
	sort.Slice(c.ipcache, func(i, j int) bool { return comparePrefixOrder(c.ipcache[i].Prefix, c.ipcache[j].Prefix) < 0 })
	c.ipcIndex = make(map[netip.Prefix]int, len(c.ipcache))
	for i, e := range c.ipcache {
		c.ipcIndex[e.Prefix] = i
	}
}

// insertIdentity adds an identity to the sorted identity list (when it is
// built).
func (c *Compiler) insertIdentity(idn Identity) {
	if c.identities == nil {
		return
	}
	i := sort.Search(len(c.identities), func(i int) bool { return c.identities[i].ID >= idn.ID })
	c.identities = append(c.identities, Identity{})
	copy(c.identities[i+1:], c.identities[i:])
	c.identities[i] = idn
}

func (c *Compiler) removeIdentityFromList(id ID) {
	if c.identities == nil {
		return
	}
	i := sort.Search(len(c.identities), func(i int) bool { return c.identities[i].ID >= id })
	if i < len(c.identities) && c.identities[i].ID == id {
		c.identities = append(c.identities[:i], c.identities[i+1:]...)
	}
}
