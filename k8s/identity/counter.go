package identity

// This file owns the number counter: a ConfigMap whose data["next"] is the
// next identity number to hand out, advanced with optimistic concurrency
// (an Update carrying the resourceVersion that was read).

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/moatnet/moat/policy"
)

// CounterName is the default name of the counter ConfigMap.
const CounterName = "moat-identity-counter"

// counterKey is the ConfigMap data key holding the next number.
const counterKey = "next"

// maxCounterAttempts bounds the optimistic-concurrency retries of one take.
const maxCounterAttempts = 100

type counter struct {
	cs        kubernetes.Interface
	namespace string
	name      string
	log       *slog.Logger
	stats     *statsCounters

	mu sync.Mutex // serialises takes within this agent; other agents race through the apiserver
	cm *corev1.ConfigMap
}

// take returns a fresh number, at least floor, and advances the counter past
// it. A missing counter is created; an unreadable or reset one never yields
// a number below floor.
func (c *counter) take(ctx context.Context, floor policy.ID) (policy.ID, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 0; attempt < maxCounterAttempts; attempt++ {
		if attempt > 0 {
			// Conflicts come from other agents taking numbers at the same
			// time; a short, growing pause lets them through.
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(time.Duration(min(attempt, 20)) * time.Millisecond):
			}
		}
		if c.cm == nil {
			cm, err := c.cs.CoreV1().ConfigMaps(c.namespace).Get(ctx, c.name, metav1.GetOptions{})
			c.stats.apiRequests.Add(1)
			switch {
			case apierrors.IsNotFound(err):
				n := max(floor, policy.IDFirstAllocated)
				if n >= policy.IDLocalFlag {
					return 0, errExhausted(n)
				}
				cm = &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: c.name, Namespace: c.namespace},
					Data:       map[string]string{counterKey: strconv.FormatUint(uint64(n+1), 10)},
				}
				created, err := c.cs.CoreV1().ConfigMaps(c.namespace).Create(ctx, cm, metav1.CreateOptions{})
				c.stats.apiRequests.Add(1)
				if apierrors.IsAlreadyExists(err) {
					continue
				}
				if err != nil {
					return 0, fmt.Errorf("create identity counter %s/%s: %w", c.namespace, c.name, err)
				}
				c.log.Info("identity counter created", "configmap", c.namespace+"/"+c.name, "first", uint32(n))
				c.cm = created
				return n, nil
			case err != nil:
				return 0, fmt.Errorf("read identity counter %s/%s: %w", c.namespace, c.name, err)
			}
			c.cm = cm
		}
		n := floor
		if v, ok := c.cm.Data[counterKey]; ok {
			cur, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				c.log.Error("identity counter unreadable, continuing above the highest known identity",
					"configmap", c.namespace+"/"+c.name, "value", v, "err", err)
			} else {
				n = max(n, policy.ID(cur))
			}
		}
		n = max(n, policy.IDFirstAllocated)
		if n >= policy.IDLocalFlag {
			return 0, errExhausted(n)
		}
		next := c.cm.DeepCopy()
		if next.Data == nil {
			next.Data = map[string]string{}
		}
		next.Data[counterKey] = strconv.FormatUint(uint64(n+1), 10)
		updated, err := c.cs.CoreV1().ConfigMaps(c.namespace).Update(ctx, next, metav1.UpdateOptions{})
		c.stats.apiRequests.Add(1)
		switch {
		case apierrors.IsConflict(err):
			c.stats.counterConflicts.Add(1)
			c.cm = nil
			continue
		case apierrors.IsNotFound(err):
			c.cm = nil
			continue
		case err != nil:
			c.cm = nil
			return 0, fmt.Errorf("advance identity counter %s/%s: %w", c.namespace, c.name, err)
		}
		c.cm = updated
		return n, nil
	}
	return 0, fmt.Errorf("advance identity counter %s/%s: still conflicting after %d attempts", c.namespace, c.name, maxCounterAttempts)
}

func errExhausted(n policy.ID) error {
	return fmt.Errorf("identity numbers exhausted: next would be %d, the last cluster-wide number is %d", uint32(n), uint32(policy.IDLocalFlag-1))
}
