package operator

// This file owns the operator's configuration.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"

	"github.com/moatnet/moat/k8s/identity"
)

// Config configures moat-operator.
type Config struct {
	// REST is the client configuration (in-cluster or a kubeconfig). Required.
	REST *rest.Config
	// Namespace holds the leader-election Lease. Required.
	Namespace string
	// Identity names this replica in the Lease; default hostname_pid.
	Identity string
	// LeaseName is the leader-election Lease; default "moat-operator".
	LeaseName string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election;
	// defaults 15s, 10s, 2s (client-go's usual values).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	// IdentityGCGrace is how long an identity stays unused before it is
	// deleted; default 15m.
	IdentityGCGrace time.Duration
	// IdentityGCInterval is the period of the GC pass; default 1m, and never
	// more than the grace.
	IdentityGCInterval time.Duration
	// LabelFilter is the pod label filter; it must be the agents' filter.
	LabelFilter identity.LabelFilter

	// MetricsAddress, if set, serves /metrics there (host:port).
	MetricsAddress string
	// Registry receives the moat_operator_* metrics; default a new
	// registry (served on MetricsAddress).
	Registry *prometheus.Registry
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Identity == "" {
		host, _ := os.Hostname()
		c.Identity = fmt.Sprintf("%s_%d", host, os.Getpid())
	}
	if c.LeaseName == "" {
		c.LeaseName = "moat-operator"
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 15 * time.Second
	}
	if c.RenewDeadline == 0 {
		c.RenewDeadline = 10 * time.Second
	}
	if c.RetryPeriod == 0 {
		c.RetryPeriod = 2 * time.Second
	}
	if c.IdentityGCGrace == 0 {
		c.IdentityGCGrace = 15 * time.Minute
	}
	if c.IdentityGCInterval == 0 {
		c.IdentityGCInterval = min(time.Minute, c.IdentityGCGrace)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks the configuration (after defaults).
func (c *Config) Validate() error {
	switch {
	case c.REST == nil:
		return errors.New("operator: no client configuration")
	case c.Namespace == "":
		return errors.New("operator: no namespace for the leader-election lease")
	case c.RenewDeadline >= c.LeaseDuration:
		return fmt.Errorf("operator: renew deadline %s must be shorter than the lease duration %s", c.RenewDeadline, c.LeaseDuration)
	case c.RetryPeriod >= c.RenewDeadline:
		return fmt.Errorf("operator: retry period %s must be shorter than the renew deadline %s", c.RetryPeriod, c.RenewDeadline)
	case c.IdentityGCGrace < 0 || c.IdentityGCInterval < 0:
		return errors.New("operator: negative identity GC grace or interval")
	}
	return c.LabelFilter.Validate()
}
