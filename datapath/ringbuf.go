package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// ringbufReader reads one ringbuf of records of type T.
type ringbufReader[T any] struct {
	m      *ebpf.Map
	what   string // "event", "tcp event": for messages
	decode func([]byte) (T, error)
	// stamp sets the time the agent read the record.
	stamp func(*T, time.Time)
	now   func() time.Time
	log   *slog.Logger
}

// run decodes each record, stamps it and calls fn, until ctx is done (then
// it returns nil). A record that does not decode is logged and skipped.
// Only one reader of a ringbuf may run at a time.
func (r ringbufReader[T]) run(ctx context.Context, fn func(T)) error {
	rd, err := ringbuf.NewReader(r.m)
	if err != nil {
		return fmt.Errorf("open %s ringbuf: %w", r.what, err)
	}
	stop := context.AfterFunc(ctx, func() { rd.Close() })
	defer stop()
	defer rd.Close()
	var rec ringbuf.Record
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if ctx.Err() != nil || errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read %s ringbuf: %w", r.what, err)
		}
		v, err := r.decode(rec.RawSample)
		if err != nil {
			r.log.Warn("skipping undecodable "+r.what, "err", err)
			continue
		}
		r.stamp(&v, r.now())
		fn(v)
	}
}
