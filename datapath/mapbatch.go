package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Batched map writes: one BPF_MAP_*_BATCH syscall per chunk instead of one
// syscall per entry, which is most of what replacing a large policy costs.
// Kernels (or map types) without batch operations get the per-entry
// syscalls.

// batchChunk bounds the entries of one batch syscall (and so the kernel's
// time between two looks at pending signals).
const batchChunk = 4096

// putMany writes keys[i] -> vals[i] for every i and returns how many leading
// entries were written (all of them when err is nil).
func putMany[K, V any](m *ebpf.Map, keys []K, vals []V) (int, error) {
	done := 0
	for done < len(keys) {
		end := min(done+batchChunk, len(keys))
		n, err := m.BatchUpdate(keys[done:end], vals[done:end], nil)
		if errors.Is(err, ebpf.ErrNotSupported) && n == 0 {
			return putEach(m, keys, vals, done)
		}
		done += n
		if err != nil {
			return done, fmt.Errorf("update %s entries: %w", m, err)
		}
	}
	return done, nil
}

func putEach[K, V any](m *ebpf.Map, keys []K, vals []V, done int) (int, error) {
	for ; done < len(keys); done++ {
		if err := m.Put(&keys[done], &vals[done]); err != nil {
			return done, fmt.Errorf("update %s entry: %w", m, err)
		}
	}
	return done, nil
}

// deleteMany deletes every key; keys that are not in the map are skipped.
// It returns how many leading keys are gone (all of them when err is nil).
func deleteMany[K any](m *ebpf.Map, keys []K) (int, error) {
	done := 0
	for done < len(keys) {
		end := min(done+batchChunk, len(keys))
		n, err := m.BatchDelete(keys[done:end], nil)
		if errors.Is(err, ebpf.ErrNotSupported) && n == 0 {
			return deleteEach(m, keys, done)
		}
		done += n
		switch {
		case err == nil:
		case errors.Is(err, ebpf.ErrKeyNotExist):
			done++ // the batch stopped at a key already gone
		default:
			return done, fmt.Errorf("delete %s entries: %w", m, err)
		}
	}
	return done, nil
}

func deleteEach[K any](m *ebpf.Map, keys []K, done int) (int, error) {
	for ; done < len(keys); done++ {
		if err := m.Delete(&keys[done]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return done, fmt.Errorf("delete %s entry: %w", m, err)
		}
	}
	return done, nil
}
