package xds

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Default values for Config.
const (
	DefaultSocket         = "/run/moat/xds.sock"
	DefaultVersionHistory = 128
	DefaultShutdownGrace  = 2 * time.Second

	// SocketMode is the permission of the unix socket: the agent's user and
	// group (the proxy runs in that group) may connect, nobody else.
	SocketMode = 0o660

	// maxUnixPath is the length limit of sun_path on Linux, minus the NUL.
	maxUnixPath = 107
)

// Config configures the xDS server. Flags and the config file map onto it.
type Config struct {
	// Socket is the path of the unix socket that proxies connect to.
	// A stale socket at that path is removed; the socket is removed on exit.
	Socket string
	// TCPAddr is an optional extra listen address ("127.0.0.1:18000"); it must
	// be a loopback address. Empty means unix socket only.
	TCPAddr string
	// VersionHistory bounds how many versions per node are remembered to order
	// ACKs ("version B supersedes version A"). WaitForACK on a version older
	// than that history fails with ErrUnknownVersion.
	VersionHistory int
	// ShutdownGrace bounds the graceful stop of the gRPC server on exit.
	ShutdownGrace time.Duration
	// Clock returns the current time (NACK timestamps, wait durations).
	// Defaults to time.Now; tests inject their own.
	Clock func() time.Time
}

// WithDefaults returns a copy of c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.VersionHistory == 0 {
		c.VersionHistory = DefaultVersionHistory
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

// Validate reports the first invalid field of c.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Socket == "":
		errs = append(errs, errors.New("socket: must not be empty"))
	case len(c.Socket) > maxUnixPath:
		errs = append(errs, fmt.Errorf("socket: path %q is %d bytes, longer than the unix socket limit of %d", c.Socket, len(c.Socket), maxUnixPath))
	}
	if c.TCPAddr != "" {
		if err := validateLoopback(c.TCPAddr); err != nil {
			errs = append(errs, fmt.Errorf("tcpAddr: %w", err))
		}
	}
	if c.VersionHistory < 2 {
		errs = append(errs, fmt.Errorf("versionHistory: %d is less than 2", c.VersionHistory))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, fmt.Errorf("shutdownGrace: %s is negative", c.ShutdownGrace))
	}
	if c.Clock == nil {
		errs = append(errs, errors.New("clock: must not be nil"))
	}
	return errors.Join(errs...)
}

func validateLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("parse %q: %w", addr, err)
	}
	if port == "" {
		return fmt.Errorf("%q has no port", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("host %q of %q is neither an IP address nor localhost", host, addr)
	}
	if !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address: the xDS server must not be reachable from the network", addr)
	}
	return nil
}
