package xds

import (
	"context"
	"errors"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// SetResources replaces the snapshot of node with res at version, and pushes
// it to the node's open streams.
//
// The caller chooses versions; each must be new for the node (a reused
// version is refused, because a proxy never asks again for a version it has).
// Monotonically increasing strings are fine; the order of SetResources calls,
// not the strings, defines which version supersedes which. Versions need not
// survive a restart of the agent: every new stream is sent the current state.
//
// The snapshot must be Consistent(): every route and endpoint resource is
// referenced, and every reference resolves.
func (s *Server) SetResources(ctx context.Context, node, version string, res map[resource.Type][]types.Resource) error {
	if node == "" {
		return errors.New("set xds resources: empty node")
	}
	if version == "" {
		return fmt.Errorf("set xds resources for node %q: empty version", node)
	}
	snap, err := cache.NewSnapshot(version, res)
	if err != nil {
		return fmt.Errorf("build snapshot %q for node %q: %w", version, node, err)
	}
	// Hash the resources first: the tracker compares them with the previous
	// version, the consistency check is skipped for content it has passed,
	// and the cache reuses the hashes for delta streams.
	if err := snap.ConstructVersionMap(); err != nil {
		return fmt.Errorf("hash snapshot %q for node %q: %w", version, node, err)
	}
	if err := s.consistent.check(snap); err != nil {
		return fmt.Errorf("check snapshot %q for node %q: %w", version, node, err)
	}

	s.setMu.Lock()
	defer s.setMu.Unlock()
	if err := s.tr.addVersion(node, version, snap.VersionMap); err != nil {
		return err
	}
	if err := s.cache.SetSnapshot(ctx, node, snap); err != nil {
		return fmt.Errorf("set snapshot %q for node %q: %w", version, node, err)
	}
	s.m.snapshots.Inc()
	return nil
}
