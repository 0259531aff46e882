package flow

import (
	"context"
	"slices"
	"testing"
	"time"
)

func seqFlow(i int) Flow {
	f := tcpFlow(Forwarded, SYN, ReplyNo)
	f.L4.SourcePort = uint16(i)
	return f
}

func ports(fs []Flow) []int {
	out := make([]int, 0, len(fs))
	for _, f := range fs {
		out = append(out, int(f.L4.SourcePort))
	}
	return out
}

func TestRingLast(t *testing.T) {
	tests := []struct {
		name     string
		capacity int
		writes   int
		n        int
		want     []int
	}{
		{name: "empty", capacity: 4, writes: 0, n: 3, want: []int{}},
		{name: "partial fill", capacity: 4, writes: 2, n: 0, want: []int{1, 2}},
		{name: "exactly full", capacity: 4, writes: 4, n: 0, want: []int{1, 2, 3, 4}},
		{name: "wrapped keeps newest in order", capacity: 4, writes: 10, n: 0, want: []int{7, 8, 9, 10}},
		{name: "last n of wrapped", capacity: 4, writes: 10, n: 2, want: []int{9, 10}},
		{name: "n above held", capacity: 4, writes: 3, n: 9, want: []int{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRing(RingConfig{Capacity: tt.capacity})
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= tt.writes; i++ {
				r.Write(seqFlow(i))
			}
			if got := ports(r.Last(tt.n, Filter{})); !slices.Equal(got, tt.want) {
				t.Errorf("Last(%d) = %v, want %v", tt.n, got, tt.want)
			}
			if want := min(tt.writes, tt.capacity); r.Len() != want {
				t.Errorf("Len() = %d, want %d", r.Len(), want)
			}
			if r.Written() != uint64(tt.writes) {
				t.Errorf("Written() = %d, want %d", r.Written(), tt.writes)
			}
		})
	}
}

func TestRingLastFiltered(t *testing.T) {
	r, err := NewRing(RingConfig{Capacity: 8})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 8; i++ {
		f := seqFlow(i)
		if i%2 == 0 {
			f.Verdict = Dropped
		}
		r.Write(f)
	}
	got := ports(r.Last(2, Filter{Verdicts: []Verdict{Dropped}}))
	if want := []int{6, 8}; !slices.Equal(got, want) {
		t.Errorf("Last(2, dropped) = %v, want %v", got, want)
	}
}

func TestFilterMatch(t *testing.T) {
	httpF := httpResponse(Egress, "GET", 200, time.Millisecond, "")
	dnsF := dnsFlow(Forwarded, ReplyNo, 0, nil, nil)
	dropF := tcpFlow(Dropped, SYN, ReplyNo)
	icmpF := icmpFlow(ProtoICMPv4, 8, 0)
	tests := []struct {
		name   string
		filter Filter
		flow   Flow
		want   bool
	}{
		{name: "zero filter matches", filter: Filter{}, flow: dropF, want: true},
		{name: "verdict match", filter: Filter{Verdicts: []Verdict{Forwarded, Dropped}}, flow: dropF, want: true},
		{name: "verdict mismatch", filter: Filter{Verdicts: []Verdict{Forwarded}}, flow: dropF, want: false},
		{name: "namespace either side", filter: Filter{Namespace: "kube-system"}, flow: dnsF, want: true},
		{name: "namespace none", filter: Filter{Namespace: "other"}, flow: dnsF, want: false},
		{name: "pod name", filter: Filter{Pod: "api-5c6d7f8b9-xyz12"}, flow: dropF, want: true},
		{name: "pod with namespace", filter: Filter{Pod: "shop/api-5c6d7f8b9-xyz12"}, flow: dropF, want: true},
		{name: "pod with wrong namespace", filter: Filter{Pod: "other/api-5c6d7f8b9-xyz12"}, flow: dropF, want: false},
		{name: "protocol l4", filter: Filter{Protocol: "tcp"}, flow: httpF, want: true},
		{name: "protocol l7", filter: Filter{Protocol: "http"}, flow: httpF, want: true},
		{name: "protocol mismatch", filter: Filter{Protocol: "udp"}, flow: httpF, want: false},
		{name: "protocol icmp", filter: Filter{Protocol: "ICMPv4"}, flow: icmpF, want: true},
		{name: "port destination", filter: Filter{Port: 53}, flow: dnsF, want: true},
		{name: "port source", filter: Filter{Port: 8080}, flow: httpF, want: true},
		{name: "port mismatch", filter: Filter{Port: 443}, flow: httpF, want: false},
		{name: "l7 http", filter: Filter{L7: "http"}, flow: httpF, want: true},
		{name: "l7 dns on http", filter: Filter{L7: "dns"}, flow: httpF, want: false},
		{name: "l7 on l3 flow", filter: Filter{L7: "http"}, flow: dropF, want: false},
		{name: "all fields", filter: Filter{Verdicts: []Verdict{Forwarded}, Namespace: "shop", Protocol: "HTTP", Port: 8080, L7: "HTTP"}, flow: httpF, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.filter.Match(&tt.flow); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
	if err := (Filter{L7: "kafka"}).Validate(); err == nil {
		t.Error("Validate accepted l7 kafka")
	}
}

func recvN(t *testing.T, ch <-chan Flow, n int) []Flow {
	t.Helper()
	var out []Flow
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case f, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %d flows, want %d", len(out), n)
			}
			out = append(out, f)
		case <-deadline:
			t.Fatalf("got %d flows before the deadline, want %d", len(out), n)
		}
	}
	return out
}

func TestRingSubscribe(t *testing.T) {
	r, err := NewRing(RingConfig{Capacity: 16, SubscriberBuffer: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	all := r.Subscribe(ctx, Filter{})
	drops := r.Subscribe(ctx, Filter{Verdicts: []Verdict{Dropped}})
	for i := 1; i <= 6; i++ {
		f := seqFlow(i)
		if i > 4 {
			f.Verdict = Dropped
		}
		r.Write(f)
	}
	if got := ports(recvN(t, all, 6)); !slices.Equal(got, []int{1, 2, 3, 4, 5, 6}) {
		t.Errorf("all subscriber got %v", got)
	}
	if got := ports(recvN(t, drops, 2)); !slices.Equal(got, []int{5, 6}) {
		t.Errorf("drop subscriber got %v", got)
	}
	cancel()
	for _, ch := range []<-chan Flow{all, drops} {
		select {
		case f, ok := <-ch:
			if ok {
				t.Errorf("unexpected flow %v after cancel", f.L4.SourcePort)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("channel not closed after cancel")
		}
	}
	// Writing after every follower left must not block or panic.
	r.Write(seqFlow(7))
}

func TestRingSlowSubscriber(t *testing.T) {
	r, err := NewRing(RingConfig{Capacity: 100, SubscriberBuffer: 3})
	if err != nil {
		t.Fatal(err)
	}
	slow := r.Subscribe(t.Context(), Filter{})
	for i := 1; i <= 10; i++ {
		r.Write(seqFlow(i)) // never blocks although nobody reads
	}
	if got := r.Dropped(); got != 7 {
		t.Errorf("Dropped() = %d, want 7", got)
	}
	if got := ports(recvN(t, slow, 3)); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("slow subscriber got %v, want the first 3", got)
	}
	// The ring itself kept everything.
	if got := len(r.Last(0, Filter{})); got != 10 {
		t.Errorf("ring holds %d flows, want 10", got)
	}
}

func TestRingFollowHistory(t *testing.T) {
	r, err := NewRing(RingConfig{Capacity: 16, SubscriberBuffer: 4})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		r.Write(seqFlow(i))
	}
	ch := r.Follow(t.Context(), Filter{}, 6) // history larger than the live buffer
	r.Write(seqFlow(11))
	if got := ports(recvN(t, ch, 7)); !slices.Equal(got, []int{5, 6, 7, 8, 9, 10, 11}) {
		t.Errorf("Follow got %v", got)
	}
	if r.Dropped() != 0 {
		t.Errorf("Dropped() = %d, want 0", r.Dropped())
	}
}

func TestRingConfigValidate(t *testing.T) {
	if _, err := NewRing(RingConfig{Capacity: -1}); err == nil {
		t.Error("NewRing accepted negative capacity")
	}
	r, err := NewRing(RingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Capacity() != 4096 {
		t.Errorf("default capacity = %d, want 4096", r.Capacity())
	}
}
