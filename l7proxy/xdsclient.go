package l7proxy

import (
	"context"
	"fmt"
	"slices"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// runXDS keeps an ADS stream open until ctx ends, reconnecting with
// exponential backoff. The accepted configuration stays in force while the
// stream is down.
func (p *Proxy) runXDS(ctx context.Context) error {
	target, err := grpcTarget(p.cfg.XDSTarget)
	if err != nil {
		return fmt.Errorf("dial xds server: %w", err)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial xds server %s: %w", p.cfg.XDSTarget, err)
	}
	defer conn.Close()
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	backoff := p.cfg.BackoffMin
	for {
		got, err := p.adsStream(ctx, client)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			backoff = p.cfg.BackoffMin
		}
		p.log.Warn("xDS stream ended; reconnecting", "target", p.cfg.XDSTarget, "error", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, p.cfg.BackoffMax)
	}
}

// adsStream runs one ADS stream; got reports whether any response arrived.
func (p *Proxy) adsStream(ctx context.Context, client discoveryv3.AggregatedDiscoveryServiceClient) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("open ADS stream: %w", err)
	}
	p.m.xdsConnected.Set(1)
	defer p.m.xdsConnected.Set(0)

	// Clusters first, then listeners (as Envoy), then the routes the
	// listeners name.
	p.mu.Lock()
	initial := []*discoveryv3.DiscoveryRequest{
		p.request(clusterType, nil, nil),
		p.request(listenerType, nil, nil),
	}
	if len(p.routeSubs) > 0 {
		initial = append(initial, p.request(routeType, p.routeSubs, nil))
	}
	// A new stream starts without nonces.
	for _, ts := range p.types {
		ts.nonce = ""
	}
	for _, r := range initial {
		r.ResponseNonce = ""
	}
	p.mu.Unlock()
	for _, r := range initial {
		if err := stream.Send(r); err != nil {
			return false, fmt.Errorf("send ADS request: %w", err)
		}
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return got, fmt.Errorf("receive ADS response: %w", err)
		}
		got = true
		for _, r := range p.handleResponse(resp) {
			if err := stream.Send(r); err != nil {
				return got, fmt.Errorf("send ADS request: %w", err)
			}
		}
	}
}

// request builds the request of typeURL that ACKs (or, with nack, NACKs)
// the last response. Caller holds p.mu.
func (p *Proxy) request(typeURL string, names []string, nack error) *discoveryv3.DiscoveryRequest {
	ts := p.types[typeURL]
	r := &discoveryv3.DiscoveryRequest{
		Node:          p.node,
		TypeUrl:       typeURL,
		VersionInfo:   ts.version,
		ResponseNonce: ts.nonce,
		ResourceNames: names,
	}
	if nack != nil {
		r.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: nack.Error()}
	}
	return r
}

// handleResponse validates and applies one response and returns the
// requests to send: its ACK or NACK, and an RDS subscription when the
// listeners now name other route configurations.
func (p *Proxy) handleResponse(resp *discoveryv3.DiscoveryResponse) []*discoveryv3.DiscoveryRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	typeURL := resp.GetTypeUrl()
	ts, ok := p.types[typeURL]
	if !ok {
		err := fmt.Errorf("unsupported resource type %s", typeURL)
		p.m.xdsUpdates.WithLabelValues(typeLabel(typeURL), "nack").Inc()
		return []*discoveryv3.DiscoveryRequest{{
			Node: p.node, TypeUrl: typeURL, VersionInfo: "", ResponseNonce: resp.GetNonce(),
			ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()},
		}}
	}
	ts.nonce = resp.GetNonce()
	var err error
	switch typeURL {
	case listenerType:
		err = p.applyListeners(resp)
	case routeType:
		err = p.applyRoutes(resp)
	case clusterType:
		err = p.applyClusters(resp)
	}
	var names []string
	if typeURL == routeType {
		names = p.routeSubs
	}
	if err != nil {
		p.m.xdsUpdates.WithLabelValues(typeLabel(typeURL), "nack").Inc()
		p.log.Warn("rejected xDS update (NACK)", "type", typeLabel(typeURL), "version", resp.GetVersionInfo(), "error", err)
		return []*discoveryv3.DiscoveryRequest{p.request(typeURL, names, err)}
	}
	p.m.xdsUpdates.WithLabelValues(typeLabel(typeURL), "ack").Inc()
	out := []*discoveryv3.DiscoveryRequest{p.request(typeURL, names, nil)}
	if typeURL == listenerType {
		if subs := p.wantedRoutes(); !slices.Equal(subs, p.routeSubs) {
			p.routeSubs = subs
			out = append(out, p.request(routeType, subs, nil))
		}
	}
	return out
}

// wantedRoutes lists the route configurations the listeners name, sorted.
func (p *Proxy) wantedRoutes() []string {
	var out []string
	for _, ls := range p.listeners {
		for _, c := range ls.chains {
			out = append(out, c.hcm.routeName)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func typeLabel(typeURL string) string {
	switch typeURL {
	case listenerType:
		return "listener"
	case routeType:
		return "route"
	case clusterType:
		return "cluster"
	}
	return "other"
}
