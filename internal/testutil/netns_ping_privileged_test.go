package testutil

import (
	"net/netip"
	"testing"
	"time"
)

// TestPrivilegedPingerKeepsItsReplies: every raw ICMP socket of a netns gets
// a copy of every ICMP packet there. Another pinger's burst arriving while a
// pinger is not being read (just opened; its reader not yet scheduled on a
// loaded host) used to fill its receive buffer, and the kernel then dropped
// the pinger's own echo reply: the restart test's post-restart ping "got no
// reply for 5 s" while moat had forwarded it. A pinger's socket now queues
// only its own replies.
func TestPrivilegedPingerKeepsItsReplies(t *testing.T) {
	t.Run("burst after the pinger opened", func(t *testing.T) { testPingerKeepsItsReplies(t, false) })
	// The burst lands between the socket's creation and its filter: what a
	// loaded host does when it deschedules the opening thread there (the
	// restart test's pinger read 256 of another pinger's replies, a full
	// buffer, and never its own).
	t.Run("burst before the filter", func(t *testing.T) { testPingerKeepsItsReplies(t, true) })
}

func testPingerKeepsItsReplies(t *testing.T, beforeFilter bool) {
	Privileged(t)
	pod := NewPod(t, PodOptions{Addr: netip.MustParseAddr("10.203.0.1")})
	burst, err := pod.NewPinger()
	if err != nil {
		t.Fatal(err)
	}
	defer burst.Close()
	// The burst: its requests and replies (to the pod's own address) would be
	// several times an unread socket's default receive buffer.
	sendBurst := func() {
		const n = 4000
		for i := range n {
			if err := burst.Send(pod.Addr, uint16(i)); err != nil {
				t.Fatal(err)
			}
		}
		// Positive control: the burst was answered in this netns.
		if _, err := burst.Recv(pod.Addr, time.Now().Add(2*time.Second)); err != nil {
			t.Fatalf("the burst got no reply: %v", err)
		}
	}
	if beforeFilter {
		testHookBeforeFilter = sendBurst
		defer func() { testHookBeforeFilter = nil }()
	}
	victim, err := pod.NewPinger()
	testHookBeforeFilter = nil
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	if !beforeFilter {
		sendBurst()
	}
	// The victim has read nothing so far; its own echo must still come back.
	if err := victim.Ping(pod.Addr, 2*time.Second); err != nil {
		t.Fatalf("ping after another pinger's burst: %v", err)
	}
}
