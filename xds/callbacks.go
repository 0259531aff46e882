package xds

import (
	"context"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// callbacks feeds go-control-plane's stream events into the tracker. They run
// synchronously on the stream's goroutine, before the request is processed
// and before the response is sent.
type callbacks struct {
	t *tracker
}

var _ serverv3.Callbacks = callbacks{}

func (c callbacks) OnStreamOpen(_ context.Context, id int64, _ string) error {
	c.t.streamOpened(streamKey{id: id})
	return nil
}

func (c callbacks) OnStreamClosed(id int64, _ *core.Node) {
	c.t.streamClosed(streamKey{id: id})
}

func (c callbacks) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	initial, nacked := c.t.request(streamKey{id: id}, req.GetNode().GetId(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail())
	switch {
	case initial:
		// A first request on a stream: forget the version the proxy claims,
		// so that the cache answers with the current state and the proxy ACKs
		// it on this stream (a version string from an earlier agent process
		// may name other resources).
		req.VersionInfo = ""
	case nacked != "":
		// The proxy keeps its last good version and names it; the cache
		// would answer at once with the rejected version again, and the
		// proxy would reject it again. Wait for the next version instead.
		req.VersionInfo = nacked
	}
	return nil
}

func (c callbacks) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	c.t.response(streamKey{id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

func (c callbacks) OnDeltaStreamOpen(_ context.Context, id int64, _ string) error {
	c.t.streamOpened(streamKey{delta: true, id: id})
	return nil
}

func (c callbacks) OnDeltaStreamClosed(id int64, _ *core.Node) {
	c.t.streamClosed(streamKey{delta: true, id: id})
}

func (c callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	if initial, _ := c.t.request(streamKey{delta: true, id: id}, req.GetNode().GetId(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail()); initial {
		// As for SotW: send everything once per stream, so that there is a
		// response to ACK. (A delta NACK needs nothing: the cache already
		// counts the rejected resources as sent and will not resend them.)
		req.InitialResourceVersions = nil
	}
	return nil
}

func (c callbacks) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	c.t.response(streamKey{delta: true, id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

func (c callbacks) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error { return nil }

func (c callbacks) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}
