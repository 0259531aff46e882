package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moatnet/moat/internal/k8stest"
)

func TestParseArgs(t *testing.T) {
	var stderr bytes.Buffer
	o, err := parseArgs([]string{"--namespace", "ns", "--identity-gc-grace", "30s", "--identity-exclude-labels", "a, b*,",
		"--metrics-address", "127.0.0.1:0", "--leader-election-id", "r1"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Namespace != "ns" || o.cfg.IdentityGCGrace != 30*time.Second || o.cfg.MetricsAddress != "127.0.0.1:0" ||
		o.cfg.Identity != "r1" || !slices.Equal(o.cfg.LabelFilter.Exclude, []string{"a", "b*"}) {
		t.Fatalf("parsed %+v", o.cfg)
	}
	if _, err := parseArgs([]string{"stray"}, &stderr); err == nil || !strings.Contains(err.Error(), `unexpected arguments: ["stray"]`) {
		t.Fatalf("stray argument: %v", err)
	}
	if _, err := parseArgs([]string{"--identity-gc-grace", "soon"}, &stderr); err == nil || !strings.Contains(err.Error(), "identity-gc-grace") {
		t.Fatalf("bad duration: %v", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunTakesLeaseAndStops: the command, given a kubeconfig, takes the
// lease in its namespace and, when its context ends (SIGTERM in main),
// releases it and returns.
func TestRunTakesLeaseAndStops(t *testing.T) {
	c := k8stest.Start(t)
	c.MustKubectl(t, "create", "namespace", "moat-system")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs syncBuffer
	go func() {
		done <- run(ctx, []string{"--kubeconfig", c.Kubeconfig, "--namespace", "moat-system", "--leader-election-id", "cmd-test",
			"--leader-election-lease-duration", "3s", "--leader-election-renew-deadline", "2s", "--leader-election-retry-period", "250ms"}, &logs)
	}()
	cs := c.Client(t)
	holder := func() string {
		l, err := cs.CoordinationV1().Leases("moat-system").Get(t.Context(), "moat-operator", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	deadline := time.Now().Add(30 * time.Second)
	for holder() != "cmd-test" {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("lease not taken within 30s; logs:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30s of cancellation")
	}
	if h := holder(); h != "" {
		t.Errorf("lease still held by %q after a graceful stop", h)
	}
	if !strings.Contains(logs.String(), "moat-operator stopped") {
		t.Errorf("logs lack the stop line:\n%s", logs.String())
	}
}
