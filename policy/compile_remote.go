package policy

import (
	"errors"
	"fmt"
	"net/netip"
)

// compile_remote.go owns what the Compiler knows about the rest of the
// cluster: remote endpoints (pods of other nodes), the other nodes'
// addresses (remote-node) and the kube-apiserver's addresses. None of them
// has a Plan of its own; they give the ipcache its entries, and a remote
// endpoint's label set is an identity that policies select like a local
// one's (the same number on every node, from the Allocator).
//
// When one address has several owners the ipcache holds, in this order of
// precedence: a local endpoint, a remote endpoint, the node itself (host),
// the kube-apiserver, a remote node, then CIDR identities. The
// kube-apiserver wins over remote-node so that `toEntities: kube-apiserver`
// reaches an apiserver that runs on another node; on its own node the
// apiserver's address is the host's.

// UpsertRemoteEndpoint adds or replaces an endpoint of another node: its
// label set (with its namespace's labels, as for a local endpoint) holds an
// identity, and its addresses map to that identity in the ipcache.
func (c *Compiler) UpsertRemoteEndpoint(ep Endpoint) error {
	if ep.Name == "" {
		return errors.New("upsert remote endpoint: empty name")
	}
	ep.Labels = compileCloneMap(ep.Labels)
	ep.Interface = ""
	key := endpointKey{ep.Namespace, ep.Name}
	ls := EndpointLabels(ep, c.namespaces[ep.Namespace])
	st, err := c.holdIdentity(ls, false)
	if err != nil {
		return fmt.Errorf("upsert remote endpoint %s/%s: %w", ep.Namespace, ep.Name, err)
	}
	old := c.remotes[key]
	c.remotes[key] = &endpointState{key: key, ep: ep, ident: st, addrs: endpointAddrs(&ep)}
	if old == nil {
		c.addOwner(c.remoteOwners, key, &ep)
		return nil
	}
	if old.ep.IPv4 == ep.IPv4 && old.ep.IPv6 == ep.IPv6 {
		for _, a := range old.addrs {
			a = a.Unmap()
			c.ipcPatch = append(c.ipcPatch, netip.PrefixFrom(a, a.BitLen()))
		}
	} else {
		c.removeOwner(c.remoteOwners, key, &old.ep)
		c.addOwner(c.remoteOwners, key, &ep)
	}
	if err := c.dropIdentity(old.ident, false); err != nil {
		return fmt.Errorf("upsert remote endpoint %s/%s: %w", ep.Namespace, ep.Name, err)
	}
	return nil
}

// DeleteRemoteEndpoint removes an endpoint of another node; it reports
// whether there was one.
func (c *Compiler) DeleteRemoteEndpoint(namespace, name string) (bool, error) {
	key := endpointKey{namespace, name}
	old := c.remotes[key]
	if old == nil {
		return false, nil
	}
	delete(c.remotes, key)
	c.removeOwner(c.remoteOwners, key, &old.ep)
	if err := c.dropIdentity(old.ident, false); err != nil {
		return true, fmt.Errorf("delete remote endpoint %s/%s: %w", namespace, name, err)
	}
	return true, nil
}

// SetRemoteNodes sets the addresses of the cluster's other nodes: they map
// to IDRemoteNode.
func (c *Compiler) SetRemoteNodes(addrs []netip.Addr) {
	c.setAddrSet(c.remoteNodes, addrs)
}

// SetAPIServers sets the kube-apiserver's addresses (the endpoints of the
// default/kubernetes Service): they map to IDKubeAPIServer.
func (c *Compiler) SetAPIServers(addrs []netip.Addr) {
	c.setAddrSet(c.apiServers, addrs)
}

func (c *Compiler) setAddrSet(set map[netip.Addr]struct{}, addrs []netip.Addr) {
	want := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		if a.IsValid() {
			want[a.Unmap()] = struct{}{}
		}
	}
	if len(want) == len(set) {
		same := true
		for a := range want {
			if _, ok := set[a]; !ok {
				same = false
				break
			}
		}
		if same {
			return
		}
	}
	clear(set)
	for a := range want {
		set[a] = struct{}{}
	}
	c.ipcacheDirty = true
}

// remoteIdentity returns the identity of the first remote owner of a (by
// namespace/name).
func (c *Compiler) remoteIdentity(a netip.Addr) (ID, bool) {
	var best *endpointKey
	for k := range c.remoteOwners[a] {
		if best == nil || k.less(*best) {
			kk := k
			best = &kk
		}
	}
	if best == nil {
		return 0, false
	}
	return c.remotes[*best].ident.info.id, true
}

// forgetPolicyOf drops the computed policy of an identity that no local
// endpoint holds any more (a remote peer still does).
func (c *Compiler) forgetPolicyOf(st *identState) {
	id := st.info.id
	for e := range st.deps {
		delete(e.dependents, id)
	}
	clear(st.deps)
	st.dirs = [2]dirState{}
	delete(c.fullDirty, id)
	delete(c.deltas, id)
}

// RemoteEndpointCount returns the number of remote endpoints known.
func (c *Compiler) RemoteEndpointCount() int { return len(c.remotes) }
