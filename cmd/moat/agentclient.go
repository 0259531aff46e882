package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// defaultAgentSocket is where moat-agent serves its local API.
const defaultAgentSocket = "/run/moat/agent.sock"

// agentClient talks to moat-agent's local API over its unix socket.
type agentClient struct {
	socket string
	http   *http.Client
}

func newAgentClient(socket string) *agentClient {
	return &agentClient{
		socket: socket,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		}},
	}
}

// get performs GET path?query and returns the open body; the caller closes
// it. Non-2xx answers become errors carrying the agent's message.
func (c *agentClient) get(ctx context.Context, path string, query url.Values) (io.ReadCloser, error) {
	return c.request(ctx, http.MethodGet, path, query)
}

// request performs method path?query with no body; see get.
func (c *agentClient) request(ctx context.Context, method, path string, query url.Values) (io.ReadCloser, error) {
	u := "http://agent" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach moat-agent at %s (is it running? --agent sets the socket): %w", c.socket, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("moat-agent %s: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp.Body, nil
}
