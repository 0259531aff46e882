package envoy

// The admin client is the read side of `moat envoy …`: it talks to the
// admin interface of Envoy (or of l7proxy, which answers the same
// endpoints) and parses what Envoy returns with Envoy's own protos. Besides
// DrainListeners, which the supervisor uses to stop Envoy gently, it never
// changes the proxy.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// adminMaxBody bounds what the client reads from one admin response; a
// config dump of a large node is a few megabytes.
const adminMaxBody = 256 << 20

// Envoy's /ready answers.
const (
	AdminStateLive            = "LIVE"
	AdminStateDraining        = "DRAINING"
	AdminStateInitializing    = "INITIALIZING"
	AdminStatePreInitializing = "PRE_INITIALIZING"
)

// AdminClient reads an Envoy admin interface (or l7proxy's imitation of
// it) over a unix socket or TCP. It only reads, except Drain.
type AdminClient struct {
	addr string // as the user gave it, for errors
	base string // URL prefix
	hc   *http.Client
}

// NewAdminClient returns a client for the admin interface at addr: a unix
// socket path ("/run/moat/envoy-admin.sock" or "unix:/run/…") or host:port.
func NewAdminClient(addr string) (*AdminClient, error) {
	if addr == "" {
		return nil, errors.New("create envoy admin client: empty address")
	}
	c := &AdminClient{addr: addr}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok || strings.HasPrefix(addr, "/") {
		if !ok {
			path = addr
		}
		if path == "" {
			return nil, fmt.Errorf("create envoy admin client: %q: empty socket path", addr)
		}
		var d net.Dialer
		c.base = "http://envoy-admin"
		c.hc = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", path)
			},
			DisableCompression: true,
		}}
		return c, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return nil, fmt.Errorf("create envoy admin client: %q is neither a socket path (starting with / or unix:) nor host:port", addr)
	}
	c.base = "http://" + net.JoinHostPort(host, port)
	c.hc = &http.Client{Transport: &http.Transport{DisableCompression: true, Proxy: nil}}
	return c, nil
}

// Addr returns the address the client was made for.
func (c *AdminClient) Addr() string { return c.addr }

// Close releases idle connections.
func (c *AdminClient) Close() { c.hc.CloseIdleConnections() }

// AdminStatusError is an admin answer with an unexpected HTTP status.
type AdminStatusError struct {
	Addr, Method, Path string
	Status             int
	Body               string // first line of the body, trimmed
}

func (e *AdminStatusError) Error() string {
	msg := fmt.Sprintf("%s %s on envoy admin %s: status %d", e.Method, e.Path, e.Addr, e.Status)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// do sends a request and returns the body of a response whose status is in
// ok; any other status becomes an *AdminStatusError.
func (c *AdminClient) do(ctx context.Context, method, path string, query url.Values, ok ...int) (int, []byte, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s on envoy admin %s: %w", method, path, c.addr, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s on envoy admin %s: %w", method, path, c.addr, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, adminMaxBody+1))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s on envoy admin %s: read body: %w", method, path, c.addr, err)
	}
	if len(body) > adminMaxBody {
		return 0, nil, fmt.Errorf("%s %s on envoy admin %s: body larger than %d bytes", method, path, c.addr, adminMaxBody)
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return resp.StatusCode, body, nil
		}
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if len(first) > 200 {
		first = first[:200] + "…"
	}
	return resp.StatusCode, nil, &AdminStatusError{Addr: c.addr, Method: method, Path: path, Status: resp.StatusCode, Body: first}
}

// unwrapURLError drops net/http's "Get \"http://envoy-admin/ready\":"
// prefix, which names a URL the user never typed.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Ready returns the server state that /ready reports: "LIVE" when Envoy
// serves traffic, otherwise PRE_INITIALIZING, INITIALIZING or DRAINING.
// A not-ready answer (status 503) is not an error.
func (c *AdminClient) Ready(ctx context.Context) (string, error) {
	_, body, err := c.do(ctx, http.MethodGet, "/ready", nil, http.StatusOK, http.StatusServiceUnavailable)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(body)), nil
}

// ServerInfo returns /server_info: version, state, uptime, node and
// command-line options.
func (c *AdminClient) ServerInfo(ctx context.Context) (*adminv3.ServerInfo, error) {
	_, body, err := c.do(ctx, http.MethodGet, "/server_info", nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	info := &adminv3.ServerInfo{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: newAdminTypes()}).Unmarshal(body, info); err != nil {
		return nil, fmt.Errorf("parse /server_info from envoy admin %s: %w", c.addr, err)
	}
	return info, nil
}

// ConfigDumpRaw returns the JSON of /config_dump, restricted to one
// resource field when resource is set (for example "dynamic_listeners" or
// "dynamic_active_clusters"; endpoint resources add include_eds).
func (c *AdminClient) ConfigDumpRaw(ctx context.Context, resource string) ([]byte, error) {
	q := url.Values{}
	if resource != "" {
		q.Set("resource", resource)
		if strings.Contains(resource, "endpoint") {
			q.Set("include_eds", "")
		}
	}
	_, body, err := c.do(ctx, http.MethodGet, "/config_dump", q, http.StatusOK)
	return body, err
}

// ConfigDump returns /config_dump parsed (see ConfigDumpRaw for resource).
// Extensions unknown to moat come out as empty Any values; use
// ParseConfigDump on ConfigDumpRaw's answer to learn which.
func (c *AdminClient) ConfigDump(ctx context.Context, resource string) (*adminv3.ConfigDump, error) {
	body, err := c.ConfigDumpRaw(ctx, resource)
	if err != nil {
		return nil, err
	}
	dump, _, err := ParseConfigDump(body)
	if err != nil {
		return nil, fmt.Errorf("parse /config_dump from envoy admin %s: %w", c.addr, err)
	}
	return dump, nil
}

// ParseConfigDump parses the JSON of an Envoy config dump. It tolerates
// fields and extension types newer than moat's go-control-plane: unknown
// fields are dropped and unknown Any types become empty placeholders, whose
// type URLs it returns.
func ParseConfigDump(data []byte) (*adminv3.ConfigDump, []string, error) {
	types := newAdminTypes()
	dump := &adminv3.ConfigDump{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: types}).Unmarshal(data, dump); err != nil {
		return nil, nil, fmt.Errorf("parse config dump: %w", err)
	}
	return dump, types.Unknown(), nil
}

// MarshalAdminJSON renders an admin or xDS proto as protojson with the
// resolver that knows every type moat links in.
func MarshalAdminJSON(m proto.Message) ([]byte, error) {
	b, err := protojson.MarshalOptions{Resolver: newAdminTypes()}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return b, nil
}

// AdminStat is one line of Envoy's /stats text output.
type AdminStat struct {
	Name  string `json:"name"`
	Value string `json:"value"` // a number, or histogram quantiles
}

// Stats returns the counters, gauges and histogram summaries of /stats
// whose names match the RE2 regular expression filter ("" for all).
func (c *AdminClient) Stats(ctx context.Context, filter string) ([]AdminStat, error) {
	q := url.Values{}
	if filter != "" {
		q.Set("filter", filter)
	}
	_, body, err := c.do(ctx, http.MethodGet, "/stats", q, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var out []AdminStat
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ": ")
		if !ok {
			return nil, fmt.Errorf("parse /stats from envoy admin %s: line %q is not \"name: value\"", c.addr, line)
		}
		out = append(out, AdminStat{Name: name, Value: strings.TrimSpace(value)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse /stats from envoy admin %s: %w", c.addr, err)
	}
	return out, nil
}

// PrometheusStats returns /stats/prometheus (text exposition format),
// restricted to metrics whose Envoy names match filter when it is set.
func (c *AdminClient) PrometheusStats(ctx context.Context, filter string) ([]byte, error) {
	q := url.Values{}
	if filter != "" {
		q.Set("filter", filter)
	}
	_, body, err := c.do(ctx, http.MethodGet, "/stats/prometheus", q, http.StatusOK)
	return body, err
}

// DrainListeners asks Envoy to drain its listeners gracefully: keep
// accepting for the drain time while telling clients to go away (HTTP/1
// "Connection: close", HTTP/2 GOAWAY), then stop.
func (c *AdminClient) DrainListeners(ctx context.Context) error {
	q := url.Values{}
	q.Set("graceful", "")
	_, _, err := c.do(ctx, http.MethodPost, "/drain_listeners", q, http.StatusOK)
	return err
}
