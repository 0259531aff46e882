package datapath

import (
	"testing"
	"time"
)

// CT lifetimes reach the programs in ticks of 2^30 ns, rounded up: no flow
// may live shorter than configured.
func TestCTTicks(t *testing.T) {
	tick := time.Duration(1) << ctTickShift
	tests := []struct {
		d    time.Duration
		want uint32
	}{
		{0, 0},
		{time.Nanosecond, 1},
		{tick, 1},
		{tick + 1, 2},
		{10 * time.Second, 10},
		{time.Minute, 56},
		{6 * time.Hour, 20117},
	}
	for _, tt := range tests {
		got := ctTicks(tt.d)
		if got != tt.want {
			t.Errorf("ctTicks(%v) = %d, want %d", tt.d, got, tt.want)
		}
		if tt.d > 0 && time.Duration(got)*tick < tt.d {
			t.Errorf("ctTicks(%v) = %d ticks = %v: shorter than asked", tt.d, got, time.Duration(got)*tick)
		}
	}
}
