package xds

import (
	"log/slog"
	"maps"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"
)

// maxPending bounds the responses per stream and type that await an ACK or
// NACK. A client answers every response in order, so more than a handful
// means it stopped answering; the oldest are dropped.
const maxPending = 32

// tracker keeps, per node and type, which version was sent, which was ACKed
// and the last NACK, and orders versions so that an ACK of a later version
// satisfies a wait for an earlier one. All of its state is under mu.
type tracker struct {
	mu      sync.Mutex
	clock   func() time.Time
	log     *slog.Logger
	m       *metrics
	history int
	nodes   map[string]*nodeState
	streams map[streamKey]*streamState
}

// streamKey names a stream: the SotW and delta servers count stream IDs
// separately.
type streamKey struct {
	delta bool
	id    int64
}

type streamState struct {
	node    string                    // "" until a request names the node
	pending map[string][]sentResponse // by type URL, in send order
}

type sentResponse struct {
	nonce   string
	version string
	seq     uint64 // 0: a version this process did not set
}

type nodeState struct {
	subscribed bool // a stream of this process has identified itself as this node
	streams    int

	seq        uint64                       // of the latest version set
	current    string                       // latest version set
	lastHashes map[string]map[string]string // type URL → resource name → hash, of current
	versions   map[string]*versionRecord
	order      []string // versions, oldest first, for eviction

	types   map[string]*typeState
	changed chan struct{} // closed and replaced on every change a waiter cares about
}

type versionRecord struct {
	seq uint64
	// contentSeq is, per type URL, the seq of the oldest version in an unbroken
	// run of versions with the same resources of that type as this one: an ACK
	// of any version from there on means the proxy runs these resources.
	contentSeq map[string]uint64
	nonEmpty   []string // type URLs with at least one resource
}

type typeState struct {
	sent     string
	acked    string
	ackedSeq uint64
	nack     *NACK
	// nackSeq is the seq of the NACKed version while that NACK is the node's
	// latest word on it; 0 once the version (or a later one) is sent again.
	nackSeq uint64
}

// NACK is a proxy's rejection of a version of one resource type.
type NACK struct {
	Version string
	// Detail is the proxy's error message (error_detail.message).
	Detail string
	// Code is the gRPC status code in error_detail.
	Code int32
	Time time.Time
}

func newTracker(clock func() time.Time, log *slog.Logger, m *metrics, history int) *tracker {
	return &tracker{
		clock:   clock,
		log:     log,
		m:       m,
		history: history,
		nodes:   make(map[string]*nodeState),
		streams: make(map[streamKey]*streamState),
	}
}

func (t *tracker) node(id string) *nodeState {
	n, ok := t.nodes[id]
	if !ok {
		n = &nodeState{
			versions: make(map[string]*versionRecord),
			types:    make(map[string]*typeState),
			changed:  make(chan struct{}),
		}
		t.nodes[id] = n
	}
	return n
}

func (n *nodeState) notify() {
	close(n.changed)
	n.changed = make(chan struct{})
}

func (n *nodeState) typ(typeURL string) *typeState {
	ts, ok := n.types[typeURL]
	if !ok {
		ts = &typeState{}
		n.types[typeURL] = ts
	}
	return ts
}

// addVersion records a new version for node with the resource hashes of its
// snapshot (type URL → name → hash). It fails if the version was used before
// for that node, because a proxy that has a version never asks for it again.
func (t *tracker) addVersion(node, version string, hashes map[string]map[string]string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.node(node)
	if _, used := n.versions[version]; used || version == n.current {
		return errVersionReused(node, version)
	}
	prev := n.versions[n.current]
	n.seq++
	rec := &versionRecord{seq: n.seq, contentSeq: make(map[string]uint64, len(hashes))}
	for typeURL, h := range hashes {
		rec.contentSeq[typeURL] = n.seq
		if prev != nil && maps.Equal(h, n.lastHashes[typeURL]) {
			if s, ok := prev.contentSeq[typeURL]; ok {
				rec.contentSeq[typeURL] = s
			}
		}
		if len(h) > 0 {
			rec.nonEmpty = append(rec.nonEmpty, typeURL)
		}
	}
	n.versions[version] = rec
	n.order = append(n.order, version)
	for len(n.order) > t.history {
		delete(n.versions, n.order[0])
		n.order = n.order[1:]
	}
	n.current = version
	n.lastHashes = hashes
	n.notify()
	return nil
}

func (t *tracker) streamOpened(key streamKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[key] = &streamState{pending: make(map[string][]sentResponse)}
	t.m.openStreams.Inc()
}

func (t *tracker) streamClosed(key streamKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.streams[key]
	if !ok {
		return
	}
	delete(t.streams, key)
	t.m.openStreams.Dec()
	if s.node == "" {
		return
	}
	n := t.node(s.node)
	n.streams--
	if n.streams == 0 {
		t.m.connectedNodes.Dec()
	}
	n.notify()
}

// request records a discovery request. It reports whether the request is not
// an answer to a response (no nonce): the caller then makes the server send
// the full current state, so that every new stream gets a response to ACK,
// whatever the proxy says it already has. For a NACK it returns the version
// rejected ("" otherwise).
func (t *tracker) request(key streamKey, nodeID, typeURL, nonce string, errDetail *status.Status) (initial bool, nacked string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.streams[key]
	if !ok {
		// Not opened through the callbacks; track it anyway.
		s = &streamState{pending: make(map[string][]sentResponse)}
		t.streams[key] = s
		t.m.openStreams.Inc()
	}
	if s.node == "" && nodeID != "" {
		s.node = nodeID
		n := t.node(nodeID)
		n.subscribed = true
		n.streams++
		if n.streams == 1 {
			t.m.connectedNodes.Inc()
		}
		n.notify()
	}
	if nonce == "" {
		return true, ""
	}
	if s.node == "" {
		return false, ""
	}
	pending := s.pending[typeURL]
	i := 0
	for i < len(pending) && pending[i].nonce != nonce {
		i++
	}
	if i == len(pending) {
		t.log.Debug("xDS request answers an unknown nonce", "node", s.node, "type", typeURL, "nonce", nonce)
		return false, ""
	}
	resp := pending[i]
	s.pending[typeURL] = pending[i+1:]
	n := t.node(s.node)
	ts := n.typ(typeURL)
	label := typeLabel(typeURL)
	if errDetail != nil {
		ts.nack = &NACK{Version: resp.version, Detail: errDetail.GetMessage(), Code: errDetail.GetCode(), Time: t.clock()}
		ts.nackSeq = resp.seq
		t.m.nacks.WithLabelValues(label).Inc()
		t.log.Warn("proxy rejected xDS resources (NACK)",
			"node", s.node, "type", typeURL, "version", resp.version, "nonce", nonce,
			"code", errDetail.GetCode(), "detail", errDetail.GetMessage())
	} else {
		if resp.seq >= ts.ackedSeq {
			ts.acked = resp.version
			ts.ackedSeq = resp.seq
		}
		t.m.acks.WithLabelValues(label).Inc()
		t.log.Debug("proxy accepted xDS resources (ACK)", "node", s.node, "type", typeURL, "version", resp.version)
	}
	n.notify()
	if errDetail != nil {
		return false, resp.version
	}
	return false, ""
}

// response records a response about to be sent on a stream.
func (t *tracker) response(key streamKey, typeURL, nonce, version string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.streams[key]
	if !ok || s.node == "" {
		return
	}
	n := t.node(s.node)
	var seq uint64
	if rec, ok := n.versions[version]; ok {
		seq = rec.seq
	}
	pending := append(s.pending[typeURL], sentResponse{nonce: nonce, version: version, seq: seq})
	if len(pending) > maxPending {
		pending = pending[len(pending)-maxPending:]
	}
	s.pending[typeURL] = pending
	ts := n.typ(typeURL)
	ts.sent = version
	if ts.nackSeq != 0 && seq >= ts.nackSeq {
		// Sent again (a new stream): wait for the new verdict.
		ts.nackSeq = 0
	}
	t.m.responses.WithLabelValues(typeLabel(typeURL)).Inc()
}
