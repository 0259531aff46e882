package k8s

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

// health.go tells since when the API has been unreachable, from the
// requests the informers make anyway (no probe of its own: an idle agent
// only watches). Every request goes through apiHealth's transport: a
// request that fails to reach the apiserver (connection refused, reset,
// timeout) or that it answers with a 5xx (its etcd is gone) marks the
// sources stale from that moment; any other answer marks them fresh. When
// the apiserver goes away, the watches end and the reflectors' retries
// fail, so staleness shows within about a second; a silent partition shows
// when the client's HTTP/2 health check gives up on the connection.

type apiHealth struct {
	mu    sync.Mutex
	since time.Time
	// onChange is called (outside mu) when the state flips.
	onChange func(stale bool, since time.Time, err error)
}

func (h *apiHealth) record(ok bool, err error) {
	h.mu.Lock()
	var changed bool
	var since time.Time
	switch {
	case ok && !h.since.IsZero():
		since, h.since, changed = h.since, time.Time{}, true
	case !ok && h.since.IsZero():
		h.since, since, changed = time.Now(), time.Now(), true
	}
	cb := h.onChange
	h.mu.Unlock()
	if changed && cb != nil {
		cb(!ok, since, err)
	}
}

// staleSince returns since when requests fail (zero: they do not).
func (h *apiHealth) staleSince() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.since
}

// wrap is a rest.Config WrapTransport.
func (h *apiHealth) wrap(rt http.RoundTripper) http.RoundTripper {
	return healthTransport{rt: rt, h: h}
}

type healthTransport struct {
	rt http.RoundTripper
	h  *apiHealth
}

func (t healthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	switch {
	case err != nil:
		if req.Context().Err() == nil { // not our own cancellation
			t.h.record(false, err)
		}
	case resp.StatusCode >= 500:
		t.h.record(false, fmt.Errorf("%s %s: HTTP %d", req.Method, req.URL.Path, resp.StatusCode))
	default:
		t.h.record(true, nil)
	}
	return resp, err
}
