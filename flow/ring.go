package flow

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// RingConfig configures a Ring.
type RingConfig struct {
	// Capacity is the number of flows kept (default 4096).
	Capacity int
	// SubscriberBuffer is the channel buffer of each follower (default 256).
	// A follower whose buffer is full misses flows; the misses are counted.
	SubscriberBuffer int
}

// Validate checks the configuration.
func (c RingConfig) Validate() error {
	if c.Capacity < 0 {
		return fmt.Errorf("validate ring config: capacity %d is negative", c.Capacity)
	}
	if c.SubscriberBuffer < 0 {
		return fmt.Errorf("validate ring config: subscriber buffer %d is negative", c.SubscriberBuffer)
	}
	return nil
}

func (c RingConfig) withDefaults() RingConfig {
	if c.Capacity == 0 {
		c.Capacity = 4096
	}
	if c.SubscriberBuffer == 0 {
		c.SubscriberBuffer = 256
	}
	return c
}

// Ring is a bounded, ordered buffer of the most recent flows with live
// followers. Writers never block: a follower that cannot keep up loses flows
// (counted in Dropped) instead of slowing the datapath reader down.
// It is safe for concurrent use.
type Ring struct {
	cfg RingConfig

	mu      sync.Mutex
	buf     []Flow
	next    int    // index the next write goes to
	written uint64 // flows written since creation
	subs    map[*subscriber]struct{}

	dropped atomic.Uint64
}

type subscriber struct {
	filter Filter
	ch     chan Flow
}

// NewRing returns an empty ring.
func NewRing(cfg RingConfig) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Ring{
		cfg:  cfg,
		buf:  make([]Flow, cfg.Capacity),
		subs: make(map[*subscriber]struct{}),
	}, nil
}

// Capacity is the number of flows the ring keeps.
func (r *Ring) Capacity() int { return r.cfg.Capacity }

// Write appends f, evicting the oldest flow when the ring is full, and hands
// it to every follower whose filter matches.
func (r *Ring) Write(f Flow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf[r.next] = f
	r.next = (r.next + 1) % len(r.buf)
	r.written++
	for s := range r.subs {
		if !s.filter.Match(&f) {
			continue
		}
		select {
		case s.ch <- f:
		default:
			r.dropped.Add(1)
		}
	}
}

// Len is the number of flows held.
func (r *Ring) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lenLocked()
}

func (r *Ring) lenLocked() int {
	if r.written < uint64(len(r.buf)) {
		return int(r.written)
	}
	return len(r.buf)
}

// Written is the number of flows written since the ring was created.
func (r *Ring) Written() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.written
}

// Dropped is the number of flows that followers missed because their
// buffer was full.
func (r *Ring) Dropped() uint64 { return r.dropped.Load() }

// Last returns up to n of the most recent flows that match filter, oldest
// first. n <= 0 means all held flows.
func (r *Ring) Last(n int, filter Filter) []Flow {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastLocked(n, &filter)
}

func (r *Ring) lastLocked(n int, filter *Filter) []Flow {
	held := r.lenLocked()
	if n <= 0 || n > held {
		n = held
	}
	out := make([]Flow, 0, n)
	// Walk backwards from the newest flow, then reverse.
	for i := 1; i <= held && len(out) < n; i++ {
		f := &r.buf[(r.next-i+len(r.buf))%len(r.buf)]
		if filter.Match(f) {
			out = append(out, *f)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Subscribe follows new flows that match filter until ctx ends, when the
// channel is closed.
func (r *Ring) Subscribe(ctx context.Context, filter Filter) <-chan Flow {
	return r.Follow(ctx, filter, 0)
}

// Follow is Subscribe that first delivers up to last of the most recent
// matching flows, with no gap or duplicate between them and the live ones.
func (r *Ring) Follow(ctx context.Context, filter Filter, last int) <-chan Flow {
	r.mu.Lock()
	var history []Flow
	if last > 0 {
		history = r.lastLocked(last, &filter)
	}
	s := &subscriber{filter: filter, ch: make(chan Flow, r.cfg.SubscriberBuffer+len(history))}
	for _, f := range history {
		s.ch <- f
	}
	r.subs[s] = struct{}{}
	r.mu.Unlock()

	go func() {
		<-ctx.Done()
		r.mu.Lock()
		delete(r.subs, s)
		close(s.ch)
		r.mu.Unlock()
	}()
	return s.ch
}
