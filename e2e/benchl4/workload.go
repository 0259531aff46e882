package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// udpPayload is the UDP payload size of the packets/s workload.
const udpPayload = 64

// WrkResult is what wrk reports.
type WrkResult struct {
	RequestsPerSec float64 `json:"requestsPerSec"`
	Requests       int64   `json:"requests"`
	SocketErrors   int64   `json:"socketErrors"`
	Non2xx         int64   `json:"non2xx"`
}

// ParseWrk reads wrk's text output.
func ParseWrk(out []byte) (WrkResult, error) {
	var r WrkResult
	seenRate := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "Requests/sec:"):
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
			if err != nil {
				return r, fmt.Errorf("parse wrk requests/sec %q: %w", line, err)
			}
			r.RequestsPerSec, seenRate = v, true
		case strings.Contains(line, " requests in "):
			f := strings.Fields(line)
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("parse wrk request count %q: %w", line, err)
			}
			r.Requests = n
		case strings.HasPrefix(line, "Socket errors:"):
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for _, part := range strings.Split(strings.TrimPrefix(line, "Socket errors:"), ",") {
				f := strings.Fields(part)
				if len(f) == 2 {
					n, err := strconv.ParseInt(f[1], 10, 64)
					if err != nil {
						return r, fmt.Errorf("parse wrk socket errors %q: %w", line, err)
					}
					r.SocketErrors += n
				}
			}
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "Non-2xx or 3xx responses:")), 10, 64)
			if err != nil {
				return r, fmt.Errorf("parse wrk non-2xx count %q: %w", line, err)
			}
			r.Non2xx = n
		}
	}
	if !seenRate {
		return r, errors.New("parse wrk output: no Requests/sec line")
	}
	return r, nil
}

// IperfResult is what an iperf3 client run reports, as the receiver saw it.
type IperfResult struct {
	BitsPerSecond    float64 `json:"bitsPerSecond"`
	PacketsPerSecond float64 `json:"packetsPerSecond,omitempty"` // UDP only
	LostPercent      float64 `json:"lostPercent,omitempty"`      // UDP only
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	Bytes         float64 `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Packets       *int64  `json:"packets"`
	LostPackets   int64   `json:"lost_packets"`
	LostPercent   float64 `json:"lost_percent"`
}

type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		Sum         *iperfSum `json:"sum"`
		SumReceived *iperfSum `json:"sum_received"`
	} `json:"end"`
}

// ParseIperf reads iperf3 -J output. For UDP it counts the packets the
// server received (sent minus lost) per second.
func ParseIperf(out []byte, udp bool) (IperfResult, error) {
	var j iperfJSON
	if err := json.Unmarshal(out, &j); err != nil {
		return IperfResult{}, fmt.Errorf("parse iperf3 json: %w", err)
	}
	if j.Error != "" {
		return IperfResult{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	s := j.End.SumReceived
	if s == nil {
		s = j.End.Sum
	}
	if s == nil || s.Seconds <= 0 {
		return IperfResult{}, errors.New("parse iperf3 json: no receiver summary")
	}
	r := IperfResult{BitsPerSecond: s.BitsPerSecond}
	if udp {
		if s.Packets == nil {
			return IperfResult{}, errors.New("parse iperf3 json: no packet count in a UDP summary")
		}
		r.PacketsPerSecond = float64(*s.Packets-s.LostPackets) / s.Seconds
		r.LostPercent = s.LostPercent
	}
	return r, nil
}

// wholeSeconds rounds d up to whole seconds, the unit wrk and iperf3 take.
func wholeSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// runWrk runs wrk in the client netns against the server, a new connection
// per request.
func (e *env) runWrk(ctx context.Context) (WrkResult, error) {
	secs := wholeSeconds(e.cfg.Duration)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+20)*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s:%d/", serverAddr, httpPort)
	out, err := inNetns(ctx, e.client.Netns, "wrk",
		"-t", strconv.Itoa(e.cfg.WrkThreads), "-c", strconv.Itoa(e.cfg.WrkConns),
		"-d", fmt.Sprintf("%ds", secs), "--timeout", "2s",
		"-H", "Connection: close", url).CombinedOutput()
	if err != nil {
		return WrkResult{}, fmt.Errorf("run wrk: %w: %s", err, tail(out))
	}
	r, err := ParseWrk(out)
	if err != nil {
		return r, fmt.Errorf("%w: %s", err, tail(out))
	}
	if r.Requests == 0 || r.RequestsPerSec <= 0 {
		return r, fmt.Errorf("run wrk: no request completed: %s", tail(out))
	}
	e.log.Debug("wrk", "req_per_s", r.RequestsPerSec, "socket_errors", r.SocketErrors, "non2xx", r.Non2xx)
	return r, nil
}

// runIperf runs a one-off iperf3 server in the server netns and a client in
// the client netns: TCP throughput, or 64-byte UDP at full speed.
func (e *env) runIperf(ctx context.Context, udp bool) (IperfResult, error) {
	secs := wholeSeconds(e.cfg.Duration)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+20)*time.Second)
	defer cancel()
	port := strconv.Itoa(int(iperfPort))
	srv := inNetns(ctx, e.server.Netns, "iperf3", "-s", "-1", "-B", serverAddr.String(), "-p", port)
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		return IperfResult{}, fmt.Errorf("start iperf3 server: %w", err)
	}
	srvDone := make(chan struct{})
	go func() {
		_ = srv.Wait()
		close(srvDone)
	}()
	stopServer := func(grace time.Duration) {
		select {
		case <-srvDone:
		case <-time.After(grace):
			_ = srv.Process.Kill()
			<-srvDone
		}
	}
	if err := e.waitListening(ctx, iperfPort, srvDone); err != nil {
		stopServer(0)
		return IperfResult{}, fmt.Errorf("start iperf3 server: %w: %s", err, tail(srvOut.Bytes()))
	}
	args := []string{"-c", serverAddr.String(), "-p", port, "-t", strconv.Itoa(secs), "-J"}
	if udp {
		args = append(args, "-u", "-l", strconv.Itoa(udpPayload), "-b", "0")
	}
	out, err := inNetns(ctx, e.client.Netns, "iperf3", args...).Output()
	stopServer(3 * time.Second)
	r, perr := ParseIperf(out, udp)
	if perr != nil {
		return r, fmt.Errorf("run iperf3 (udp=%v): %w", udp, errors.Join(err, perr))
	}
	e.log.Debug("iperf3", "udp", udp, "gbit_per_s", r.BitsPerSecond/1e9, "pps", r.PacketsPerSecond, "lost_percent", r.LostPercent)
	return r, nil
}

// waitListening polls the server netns's TCP table until a socket listens on
// port (without connecting to it, which would cost iperf3 a test).
func (e *env) waitListening(ctx context.Context, port uint16, exited <-chan struct{}) error {
	want := portSuffix(port)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var found bool
		err := e.mgr.Do(e.serverEp, func() error {
			for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
				b, err := os.ReadFile(f)
				if err != nil {
					return err
				}
				if listensOn(b, want) {
					found = true
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read server tcp table: %w", err)
		}
		if found {
			return nil
		}
		select {
		case <-exited:
			return errors.New("server exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on port %d after 5s", port)
		}
	}
}

// portSuffix is how /proc/net/tcp ends a local address on port.
func portSuffix(port uint16) string { return fmt.Sprintf(":%04X", port) }

// listensOn reports whether a /proc/net/tcp table has a LISTEN (0A) socket
// whose local address ends in portSuffix (":1451").
func listensOn(table []byte, portSuffix string) bool {
	sc := bufio.NewScanner(bytes.NewReader(table))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 3 && strings.HasSuffix(f[1], portSuffix) && f[3] == "0A" {
			return true
		}
	}
	return false
}
