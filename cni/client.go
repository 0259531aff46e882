package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Client calls the agent's CNI API over its unix socket.
type Client struct {
	Socket  string
	Timeout time.Duration
}

func (c Client) http() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", c.Socket)
			},
			DisableKeepAlives: true,
		},
	}
}

// Do sends in (nil for GET) to path and decodes the answer into out. Every
// failure is an *Error naming the socket: code 11 (try again later) when
// the agent does not answer, the agent's own code when it refuses.
func (c Client) Do(ctx context.Context, path string, in, out any) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	method, body := http.MethodGet, io.Reader(nil)
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return &Error{Code: CodeInternal, Msg: "encode request", Details: err.Error()}
		}
		method, body = http.MethodPost, bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://moat-agent"+path, body)
	if err != nil {
		return &Error{Code: CodeInternal, Msg: "build request", Details: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http().Do(req)
	if err != nil {
		msg := fmt.Sprintf("moat agent unreachable on %s (is moat-agent running on this node?)", c.Socket)
		if errors.Is(err, context.DeadlineExceeded) {
			msg = fmt.Sprintf("moat agent on %s did not answer within %s", c.Socket, timeout)
		}
		return &Error{Code: CodeTryAgainLater, Msg: msg, Details: err.Error()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return &Error{Code: CodeTryAgainLater, Msg: fmt.Sprintf("read answer of moat agent on %s", c.Socket), Details: err.Error()}
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(data, &e) != nil || e.Msg == "" {
			e = Error{Code: CodeInternal, Msg: fmt.Sprintf("moat agent on %s: %s", c.Socket, resp.Status), Details: string(bytes.TrimSpace(data))}
		}
		if e.Code == 0 {
			e.Code = CodeInternal
		}
		if !strings.Contains(e.Msg, c.Socket) {
			e.Msg = "moat agent on " + c.Socket + ": " + e.Msg
		}
		return &e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &Error{Code: CodeInternal, Msg: fmt.Sprintf("decode answer of moat agent on %s", c.Socket), Details: err.Error()}
	}
	return nil
}

// DefaultTimeout bounds one call to the agent: ADD waits for the pod to be
// in the agent's cache and enforced.
const DefaultTimeout = 60 * time.Second

// DefaultSocket is the agent's local API socket (agent.DefaultRunDir).
const DefaultSocket = "/run/moat/agent.sock"
