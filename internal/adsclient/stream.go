package adsclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

// Protocol is an ADS variant.
type Protocol string

const (
	// SotW is state of the world: every response carries all resources of
	// its type (StreamAggregatedResources).
	SotW Protocol = "sotw"
	// Delta is incremental: responses carry changed and removed resources
	// (DeltaAggregatedResources).
	Delta Protocol = "delta"
)

// DefaultNodeCluster is the node cluster Open sends, as moat's bootstrap
// does.
const DefaultNodeCluster = "moat"

// Stream is one ADS stream of one node. Recv must be called from one
// goroutine at a time; Subscribe, ACK and NACK may be called from any
// goroutine.
type Stream struct {
	proto  Protocol
	cancel context.CancelFunc
	sotw   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	delta  discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient

	mu       sync.Mutex // orders sends and guards the fields below
	node     *corev3.Node
	subs     map[string][]string // SotW: type URL → subscribed names, resent with every request
	answered map[string]answer   // SotW: type URL → last ACKed version and last answered nonce
}

type answer struct {
	version string // last ACKed version
	nonce   string // nonce of the last response ACKed or NACKed
}

// Open opens an ADS stream as node (cluster DefaultNodeCluster). The stream
// lives until ctx ends or Close is called.
func (c *Conn) Open(ctx context.Context, p Protocol, node string) (*Stream, error) {
	return c.OpenNode(ctx, p, &corev3.Node{Id: node, Cluster: DefaultNodeCluster})
}

// OpenNode is Open with a node of the caller's making. The node is sent in
// the first request only, as Envoy does with set_node_on_first_message_only.
func (c *Conn) OpenNode(ctx context.Context, p Protocol, node *corev3.Node) (*Stream, error) {
	if node.GetId() == "" {
		return nil, errors.New("open ads stream: empty node id")
	}
	ctx, cancel := context.WithCancel(ctx)
	ads := discovery.NewAggregatedDiscoveryServiceClient(c.ClientConn)
	s := &Stream{proto: p, cancel: cancel, node: node}
	var err error
	switch p {
	case SotW:
		s.subs, s.answered = map[string][]string{}, map[string]answer{}
		s.sotw, err = ads.StreamAggregatedResources(ctx)
	case Delta:
		s.delta, err = ads.DeltaAggregatedResources(ctx)
	default:
		err = fmt.Errorf("unknown protocol %q", p)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open %s ads stream for node %q: %w", p, node.GetId(), err)
	}
	return s, nil
}

// Protocol returns the stream's ADS variant.
func (s *Stream) Protocol() Protocol { return s.proto }

// Close ends the stream.
func (s *Stream) Close() { s.cancel() }

// Subscribe asks for resources of typeURL: the given names, or every
// resource of the type (wildcard) when there are none. Names add to those
// subscribed before.
func (s *Stream) Subscribe(typeURL string, names ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.proto == SotW {
		subs := s.subs[typeURL]
		for _, n := range names {
			if !slices.Contains(subs, n) {
				subs = append(subs, n)
			}
		}
		s.subs[typeURL] = subs
		a := s.answered[typeURL]
		err = s.sendSotW(&discovery.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: a.version, ResponseNonce: a.nonce})
	} else {
		err = s.sendDelta(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names})
	}
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", typeURL, err)
	}
	return nil
}

// Recv returns the next response of any type.
func (s *Stream) Recv() (*Response, error) {
	if s.proto == SotW {
		resp, err := s.sotw.Recv()
		if err != nil {
			return nil, fmt.Errorf("receive sotw response: %w", err)
		}
		r := &Response{TypeURL: resp.GetTypeUrl(), Version: resp.GetVersionInfo(), Nonce: resp.GetNonce(),
			Resources: make([]Resource, 0, len(resp.GetResources()))}
		for _, a := range resp.GetResources() {
			r.Resources = append(r.Resources, Resource{Body: a})
		}
		return r, nil
	}
	resp, err := s.delta.Recv()
	if err != nil {
		return nil, fmt.Errorf("receive delta response: %w", err)
	}
	r := &Response{TypeURL: resp.GetTypeUrl(), Version: resp.GetSystemVersionInfo(), Nonce: resp.GetNonce(),
		Delta: true, Removed: resp.GetRemovedResources(), Resources: make([]Resource, 0, len(resp.GetResources()))}
	for _, res := range resp.GetResources() {
		r.Resources = append(r.Resources, Resource{Name: res.GetName(), Version: res.GetVersion(), Body: res.GetResource()})
	}
	return r, nil
}

// ACK accepts r.
func (s *Stream) ACK(r *Response) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.proto == SotW {
		s.answered[r.TypeURL] = answer{version: r.Version, nonce: r.Nonce}
		err = s.sendSotW(&discovery.DiscoveryRequest{TypeUrl: r.TypeURL, VersionInfo: r.Version, ResponseNonce: r.Nonce})
	} else {
		err = s.sendDelta(&discovery.DeltaDiscoveryRequest{TypeUrl: r.TypeURL, ResponseNonce: r.Nonce})
	}
	if err != nil {
		return fmt.Errorf("ack %s version %q: %w", r.TypeURL, r.Version, err)
	}
	return nil
}

// NACK rejects r with detail as the error message (code INVALID_ARGUMENT,
// as Envoy sends). A SotW NACK names the last accepted version of the type.
func (s *Stream) NACK(r *Response, detail string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	status := &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: detail}
	var err error
	if s.proto == SotW {
		a := s.answered[r.TypeURL]
		a.nonce = r.Nonce
		s.answered[r.TypeURL] = a
		err = s.sendSotW(&discovery.DiscoveryRequest{TypeUrl: r.TypeURL, VersionInfo: a.version, ResponseNonce: r.Nonce, ErrorDetail: status})
	} else {
		err = s.sendDelta(&discovery.DeltaDiscoveryRequest{TypeUrl: r.TypeURL, ResponseNonce: r.Nonce, ErrorDetail: status})
	}
	if err != nil {
		return fmt.Errorf("nack %s version %q: %w", r.TypeURL, r.Version, err)
	}
	return nil
}

// Serve answers every response until the stream fails or ends: it calls
// check (when not nil) and NACKs the response with the error check returns,
// or ACKs it. It returns the error that ended the stream.
func (s *Stream) Serve(check func(*Response) error) error {
	for {
		r, err := s.Recv()
		if err != nil {
			return err
		}
		if check != nil {
			if cerr := check(r); cerr != nil {
				if err := s.NACK(r, cerr.Error()); err != nil {
					return err
				}
				continue
			}
		}
		if err := s.ACK(r); err != nil {
			return err
		}
	}
}

// sendSotW sends req with the node (first request only) and the type's
// subscribed names. s.mu must be held.
func (s *Stream) sendSotW(req *discovery.DiscoveryRequest) error {
	req.Node, s.node = s.node, nil
	req.ResourceNames = s.subs[req.GetTypeUrl()]
	return s.sotw.Send(req)
}

// sendDelta sends req with the node (first request only). s.mu must be held.
func (s *Stream) sendDelta(req *discovery.DeltaDiscoveryRequest) error {
	req.Node, s.node = s.node, nil
	return s.delta.Send(req)
}

// SetSubscription replaces the names subscribed for typeURL (SotW only:
// the next request names exactly these). An empty list is a wildcard
// subscription, as in Subscribe.
func (s *Stream) SetSubscription(typeURL string, names ...string) error {
	if s.proto != SotW {
		return fmt.Errorf("set subscription to %s: only for sotw streams", typeURL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs[typeURL] = slices.Clone(names)
	a := s.answered[typeURL]
	if err := s.sendSotW(&discovery.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: a.version, ResponseNonce: a.nonce}); err != nil {
		return fmt.Errorf("set subscription to %s: %w", typeURL, err)
	}
	return nil
}
