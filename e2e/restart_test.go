package e2e

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const restartEndpoints = `endpoints:
- name: a
  labels: {app: a}
  ipv4: 10.212.0.1
- name: b
  labels: {app: b}
  ipv4: 10.212.0.2
`

const restartPolicy = cnp + `metadata: {name: b-restart}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    icmps: [{fields: [{type: 8, family: IPv4}]}]
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
`

const (
	pingInterval   = 2 * time.Millisecond // 500 pings per second
	minPings       = 2000
	pingsAfterBack = 500 // at least this many once the agent is back
)

// TestPrivilegedAgentKillRestart SIGKILLs the agent under a 500 pps ping
// from a to b and restarts it with the same directories: enforcement goes on
// while it is down (the denied port stays denied, the allowed port stays
// allowed), the restarted agent adopts the pinned state and the endpoints
// as they are, and not one ping is lost across the whole window.
func TestPrivilegedAgentKillRestart(t *testing.T) {
	requirePrivileged(t)
	a := startAgent(t, agentSpec{short: "r", endpoints: restartEndpoints, policies: map[string]string{"p.yaml": restartPolicy}})
	pa := endpointPeer(a, "a", "10.212.0.1")
	pb := endpointPeer(a, "b", "10.212.0.2")
	serveEcho(t, pb, []uint16{8080, 9090}, nil)
	before, err := a.status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if err := probe(pa, pb.addr, protoTCP, 8080, 2*time.Second); err != nil {
		t.Fatalf("a->b:8080 before the kill: %v", err)
	}

	pg, err := newPinger(pa)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		wg        sync.WaitGroup
		sent      atomic.Int64
		sendUntil atomic.Int64 // the sender stops at this count
		sendErr   error
	)
	sendUntil.Store(1 << 40)
	// Receiver: records every echo reply's sequence number.
	var (
		recvMu   sync.Mutex
		received = map[uint16]bool{}
		recvErr  error
	)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			seq, err := pg.Recv(pb.addr, time.Now().Add(100*time.Millisecond))
			err = noAnswer(err)
			if errors.Is(err, errNoAnswer) {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			if err != nil {
				if ctx.Err() == nil {
					recvErr = err
				}
				return
			}
			recvMu.Lock()
			received[seq] = true
			recvMu.Unlock()
		}
	}()
	// Sender: one echo request every 2 ms until sendUntil is reached.
	sendDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(sendDone)
		tick := time.NewTicker(pingInterval)
		defer tick.Stop()
		for sent.Load() < sendUntil.Load() {
			if err := pg.Send(pb.addr, uint16(sent.Load())); err != nil {
				sendErr = err
				return
			}
			sent.Add(1)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	// Denied flow: connects to b:9090 throughout; none may succeed.
	var (
		down                       atomic.Bool
		attempts, downTries, leaks atomic.Int64
		otherErr                   atomic.Value
	)
	probeCtx, stopProbes := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for probeCtx.Err() == nil {
			wasDown := down.Load()
			err := probeTCP(pa, netip.AddrPortFrom(pb.addr, 9090), 150*time.Millisecond)
			attempts.Add(1)
			if wasDown && down.Load() {
				downTries.Add(1)
			}
			switch {
			case err == nil:
				leaks.Add(1)
			case !errors.Is(err, errNoAnswer):
				otherErr.CompareAndSwap(nil, err.Error())
			}
		}
	}()

	waitUntil(t, "250 pings sent", 10*time.Second, func() bool { return sent.Load() >= 250 })
	down.Store(true)
	a.kill(syscall.SIGKILL)
	killedAt := sent.Load()
	waitUntil(t, "a denied connect while the agent is down", 10*time.Second, func() bool { return downTries.Load() >= 2 })
	if err := probe(pa, pb.addr, protoTCP, 8080, 2*time.Second); err != nil {
		t.Errorf("a->b:8080 while the agent is down: %v (want allowed)", err)
	}
	if pins, err := os.ReadDir(a.pinRoot); err != nil || len(pins) == 0 {
		t.Errorf("pinned state under %s while the agent is down: %d entries, %v", a.pinRoot, len(pins), err)
	}
	down.Store(false)
	restartAt := sent.Load()
	a.start()
	backAt := sent.Load()
	sendUntil.Store(max(minPings, backAt+pingsAfterBack))
	select {
	case <-sendDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("sender did not finish")
	}
	stopProbes()
	total := sent.Load()
	// Wait for the last replies, then stop the receiver.
	deadline := time.Now().Add(2 * time.Second)
	for {
		recvMu.Lock()
		n := int64(len(received))
		recvMu.Unlock()
		if n >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond) // poll interval of a deadline-bounded wait
	}
	cancel()
	<-recvDone
	wg.Wait()

	if sendErr != nil {
		t.Errorf("send pings: %v", sendErr)
	}
	if recvErr != nil {
		t.Errorf("receive pings: %v", recvErr)
	}
	recvMu.Lock()
	var lost []int64
	for s := int64(0); s < total; s++ {
		if !received[uint16(s)] {
			lost = append(lost, s)
		}
	}
	recvMu.Unlock()
	if len(lost) > 0 {
		t.Errorf("lost %d of %d pings (killed at #%d, restarted at #%d, back at #%d); first lost: %v",
			len(lost), total, killedAt, restartAt, backAt, lost[:min(len(lost), 20)])
	}
	if n := leaks.Load(); n > 0 {
		t.Errorf("%d of %d connects to the denied port 9090 succeeded", n, attempts.Load())
	}
	if e := otherErr.Load(); e != nil {
		t.Errorf("connect to denied port 9090: unexpected error (not a drop): %v", e)
	}

	// The restarted agent adopted the endpoints rather than recreating them.
	after, err := a.status()
	if err != nil {
		t.Fatalf("status after restart: %v", err)
	}
	for _, e := range before.Endpoints {
		got, ok := statusEndpoint(after, e.Namespace+"/"+e.Name)
		if !ok {
			t.Errorf("endpoint %s/%s missing after restart", e.Namespace, e.Name)
			continue
		}
		if got.Ifindex != e.Ifindex || got.Identity != e.Identity {
			t.Errorf("endpoint %s/%s: ifindex %d identity %d after restart, was %d and %d (not adopted)",
				e.Namespace, e.Name, got.Ifindex, got.Identity, e.Ifindex, e.Identity)
		}
	}
	if err := probe(pa, pb.addr, protoTCP, 9090, time.Second); !errors.Is(err, errNoAnswer) {
		t.Errorf("a->b:9090 after restart: %v, want dropped", err)
	}
	if err := probe(pa, pb.addr, protoTCP, 8080, 2*time.Second); err != nil {
		t.Errorf("a->b:8080 after restart: %v, want allowed", err)
	}
	t.Logf("%d pings, %d lost; killed at #%d, back at #%d; %d denied connects (%d while down)",
		total, len(lost), killedAt, backAt, attempts.Load(), downTries.Load())
}
