package xds

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// ErrNotSubscribed is returned by WaitForACK for a node that never opened a
// stream to this server: nobody would ever ACK, so it is not waited for.
var ErrNotSubscribed = errors.New("node never subscribed")

// ErrUnknownVersion is returned by WaitForACK for a version that was never set
// for the node, or that is older than the remembered history.
var ErrUnknownVersion = errors.New("unknown version")

func errVersionReused(node, version string) error {
	return fmt.Errorf("set version %q for node %q: version was used before", version, node)
}

// NACKError is returned by WaitForACK when the node rejected the version (or
// a later one carrying the same or newer resources of that type).
type NACKError struct {
	Node    string
	Type    string // type URL
	Version string // the version that was rejected
	Detail  string // the proxy's error message
}

func (e *NACKError) Error() string {
	return fmt.Sprintf("node %q rejected %s version %q: %s", e.Node, e.Type, e.Version, e.Detail)
}

// WaitForACK returns nil once node has ACKed version, or a later version with
// the same or newer resources, for every given type URL. Without type URLs it
// waits for every type that has resources in that version.
//
// It fails closed, counting the reason in moat_xds_wait_failures_total:
//   - ErrNotSubscribed, at once, when node never opened a stream here;
//   - *NACKError when node rejected that version (or a later one) of a type,
//     until that version is sent to it again (a new stream);
//   - ErrUnknownVersion when version was never set for node (or is too old);
//   - ctx's error when ctx ends first (bound every wait with a deadline).
//
// A node that subscribed and is momentarily disconnected is waited for: it
// gets the current snapshot when it reconnects.
func (s *Server) WaitForACK(ctx context.Context, node, version string, typeURLs ...string) error {
	start := s.cfg.Clock()
	err := s.waitForACK(ctx, node, version, typeURLs)
	s.m.waitSeconds.Observe(s.cfg.Clock().Sub(start).Seconds())
	if err != nil {
		var nack *NACKError
		reason := ReasonTimeout
		switch {
		case errors.Is(err, ErrNotSubscribed):
			reason = ReasonNotSubscribed
		case errors.Is(err, ErrUnknownVersion):
			reason = ReasonUnknownVersion
		case errors.As(err, &nack):
			reason = ReasonNACK
		}
		s.m.waitFailures.WithLabelValues(reason).Inc()
	}
	return err
}

func (s *Server) waitForACK(ctx context.Context, node, version string, typeURLs []string) error {
	t := s.tr
	for {
		t.mu.Lock()
		n, ok := t.nodes[node]
		if !ok || !n.subscribed {
			t.mu.Unlock()
			return fmt.Errorf("wait for ack of version %q by node %q: %w", version, node, ErrNotSubscribed)
		}
		done, err := n.acked(node, version, typeURLs)
		changed := n.changed
		t.mu.Unlock()
		if err != nil || done {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for ack of version %q by node %q: %w", version, node, ctx.Err())
		}
	}
}

// acked reports whether n has ACKed version for all typeURLs, or the NACK
// that makes it never will.
func (n *nodeState) acked(node, version string, typeURLs []string) (bool, error) {
	rec, ok := n.versions[version]
	if !ok {
		return false, fmt.Errorf("wait for ack of version %q by node %q: %w", version, node, ErrUnknownVersion)
	}
	if len(typeURLs) == 0 {
		typeURLs = rec.nonEmpty
	}
	done := true
	for _, typeURL := range slices.Sorted(slices.Values(typeURLs)) {
		need, ok := rec.contentSeq[typeURL]
		if !ok {
			need = rec.seq
		}
		ts := n.types[typeURL]
		switch {
		case ts != nil && ts.ackedSeq >= need:
		case ts != nil && ts.nackSeq != 0 && ts.nackSeq >= need:
			return false, &NACKError{Node: node, Type: typeURL, Version: ts.nack.Version, Detail: ts.nack.Detail}
		default:
			done = false
		}
	}
	return done, nil
}
