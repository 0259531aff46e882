package agent

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// dns_release.go releases the addresses the DNS proxy's cache forgets
// (expired, evicted past the per-name cap, flushed), except those a live
// connection uses: an address leaves the compiler, and so the ipcache, only
// after a sweep of the connection-tracking map that started after the cache
// forgot it found no flow to or from it. Addresses in use stay until their
// flows end; an address the cache learned again meanwhile stays too. The
// cache's hot paths never wait for a sweep: releases are batched and swept
// by releaseLoop.

// liveAddrs finds which of addrs a tracked flow uses
// (*datapath.Datapath.ConntrackAddrs).
type liveAddrs interface {
	ConntrackAddrs(addrs map[netip.Addr]struct{}) (map[netip.Addr]struct{}, error)
}

// releaseInterval is how often releaseLoop sweeps for pending releases.
const releaseInterval = time.Second

// releases are the (name, address) pairs waiting for a sweep.
type releases struct {
	mu      sync.Mutex
	pending map[string]map[netip.Addr]struct{}
	kick    chan struct{}
}

func newReleases() *releases {
	return &releases{pending: map[string]map[netip.Addr]struct{}{}, kick: make(chan struct{}, 1)}
}

func (r *releases) add(name string, ips []netip.Addr) {
	r.mu.Lock()
	m := r.pending[name]
	if m == nil {
		m = map[netip.Addr]struct{}{}
		r.pending[name] = m
	}
	for _, ip := range ips {
		m[ip.Unmap()] = struct{}{}
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// take removes and returns every pending pair.
func (r *releases) take() map[string]map[netip.Addr]struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.pending
	r.pending = map[string]map[netip.Addr]struct{}{}
	return out
}

// releaseLoop sweeps pending releases until ctx ends: at most once per
// releaseInterval, and again while addresses in use wait.
func (a *Agent) releaseLoop(ctx context.Context) error {
	r := a.dns.releases
	t := time.NewTicker(releaseInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		}
		select { // let a burst of evictions gather
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		a.releaseNow()
	}
}

// releaseNow sweeps once: addresses in use (or learned again) go back to
// the pending set, the others are forgotten by the compiler.
func (a *Agent) releaseNow() {
	r := a.dns.releases
	batch := r.take()
	if len(batch) == 0 {
		return
	}
	addrs := map[netip.Addr]struct{}{}
	for _, ips := range batch {
		for ip := range ips {
			addrs[ip] = struct{}{}
		}
	}
	var used map[netip.Addr]struct{}
	if a.live != nil {
		var err error
		if used, err = a.live.ConntrackAddrs(addrs); err != nil {
			// Without a sweep nothing is known to be unused: try again.
			a.log.Warn("dns: check learned addresses for live connections", "err", err)
			for name, ips := range batch {
				r.add(name, slices.Collect(maps.Keys(ips)))
			}
			return
		}
	}
	cache := a.dns.proxy.Cache()
	names := slices.Sorted(maps.Keys(batch))
	for _, name := range names {
		held := cache.Lookup(name)
		var gone, kept []netip.Addr
		for ip := range batch[name] {
			if _, ok := slices.BinarySearchFunc(held, ip, netip.Addr.Compare); ok {
				continue // learned again: the cache holds it
			}
			if _, ok := used[ip]; ok {
				kept = append(kept, ip)
				continue
			}
			gone = append(gone, ip)
		}
		if len(kept) > 0 {
			r.add(name, kept)
			a.m.dnsReleasesDeferred.Add(float64(len(kept)))
		}
		if len(gone) > 0 {
			slices.SortFunc(gone, netip.Addr.Compare)
			a.forgetFQDN(name, gone)
		}
	}
}
