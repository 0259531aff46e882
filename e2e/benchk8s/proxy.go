package main

// proxy.go owns the counting reverse proxy between the agent and the
// apiserver: the agent's every request, attributed without doubt.

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"

	"k8s.io/client-go/rest"
)

// countingProxy forwards plain HTTP from the agent to the apiserver with
// the credentials of cfg, counting requests by verb.
type countingProxy struct {
	ln  net.Listener
	srv *http.Server

	mu     sync.Mutex
	byVerb map[string]int
	open   int // watches in flight
}

type proxyCounts struct {
	byVerb map[string]int
	open   int
}

func newCountingProxy(cfg *rest.Config) (*countingProxy, error) {
	target, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, err
	}
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = tr
	rp.FlushInterval = -1 // watches stream
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{ln: ln, byVerb: map[string]int{}}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		verb := r.Method
		watch := r.Method == http.MethodGet && (r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1")
		if watch {
			verb = "WATCH"
		} else if r.Method == http.MethodGet {
			verb = "GET/LIST"
		}
		p.mu.Lock()
		p.byVerb[verb]++
		if watch {
			p.open++
		}
		p.mu.Unlock()
		defer func() {
			if watch {
				p.mu.Lock()
				p.open--
				p.mu.Unlock()
			}
		}()
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *countingProxy) Addr() string { return p.ln.Addr().String() }

// Reset zeroes the counts (not the open watches).
func (p *countingProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byVerb = map[string]int{}
}

// Snapshot returns the counts since Reset and the watches in flight.
func (p *countingProxy) Snapshot() proxyCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := proxyCounts{byVerb: map[string]int{}, open: p.open}
	for k, v := range p.byVerb {
		out.byVerb[k] = v
	}
	return out
}

// Close stops the proxy.
func (p *countingProxy) Close() { _ = p.srv.Close() }
