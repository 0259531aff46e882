package datapath

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/moatnet/moat/policy"
)

// Prune removes every endpoint this manager's prefix owns that keep does not
// name (by namespace and name), and netns files under NetnsDir whose lo alias
// says they belong to such an endpoint (left over when the host veth was lost
// while the agent was down). It returns what it removed. An agent calls it
// once after start-up, with the endpoints it was told about.
func (m *EndpointManager) Prune(ctx context.Context, keep []policy.Endpoint) ([]EndpointLink, error) {
	wanted := map[[2]string]bool{}
	for _, ep := range keep {
		wanted[[2]string{ep.Namespace, ep.Name}] = true
	}
	listed, err := m.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune endpoints: %w", err)
	}
	var removed []EndpointLink
	var errs []error
	for _, l := range listed {
		if wanted[[2]string{l.Namespace, l.Name}] {
			continue
		}
		if err := m.Remove(ctx, l.Endpoint()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, l)
	}
	orphans, err := m.orphanNetns(wanted)
	if err != nil {
		errs = append(errs, err)
	}
	for _, o := range orphans {
		if err := netnsDelete(o.Netns); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, o)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("prune endpoints: %w", err)
	}
	return removed, nil
}

// orphanNetns returns the netns files with this manager's prefix whose owner
// alias names an endpoint outside wanted.
func (m *EndpointManager) orphanNetns(wanted map[[2]string]bool) ([]EndpointLink, error) {
	entries, err := os.ReadDir(m.cfg.NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read netns dir %s: %w", m.cfg.NetnsDir, err)
	}
	var out []EndpointLink
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), m.cfg.NetnsPrefix) {
			continue
		}
		path := filepath.Join(m.cfg.NetnsDir, e.Name())
		prefix, namespace, name, ok := m.netnsOwner(path)
		if !ok || prefix != m.cfg.NetnsPrefix || wanted[[2]string{namespace, name}] {
			continue
		}
		out = append(out, EndpointLink{Namespace: namespace, Name: name, Netns: path})
	}
	return out, nil
}

// netnsOwner reads the endpoint named by the owner alias inside the netns at
// path.
func (m *EndpointManager) netnsOwner(path string) (prefix, namespace, name string, ok bool) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return "", "", "", false
	}
	defer h.Close()
	pod, err := netlink.NewHandleAt(h)
	if err != nil {
		return "", "", "", false
	}
	defer pod.Close()
	alias, ok := m.podOwner(pod)
	if !ok {
		return "", "", "", false
	}
	return epParseAlias(alias)
}
