package main

import (
	"math"
	"testing"
	"time"
)

const wrkSample = `Running 5s test @ http://10.239.100.1:8080/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.01ms    1.10ms  21.32ms   80.12%
    Req/Sec     6.12k   512.33     7.01k    70.00%
  61234 requests in 5.00s, 7.01MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  12246.80
Transfer/sec:      1.40MB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    WrkResult
		wantErr bool
	}{
		{name: "full", out: wrkSample, want: WrkResult{RequestsPerSec: 12246.80, Requests: 61234, SocketErrors: 6, Non2xx: 4}},
		{name: "clean", out: "  10 requests in 1.00s, 1KB read\nRequests/sec:     10.00\n", want: WrkResult{RequestsPerSec: 10, Requests: 10}},
		{name: "no rate", out: "unable to connect to 10.239.100.1:8080 Connection refused\n", wantErr: true},
		{name: "bad rate", out: "Requests/sec: lots\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseWrk([]byte(tc.out))
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseWrk error = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Errorf("ParseWrk = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseIperf(t *testing.T) {
	tcp := `{"start":{},"end":{"sum_sent":{"seconds":5,"bits_per_second":2e10},"sum_received":{"seconds":5.001,"bytes":1,"bits_per_second":1.8e10}}}`
	udp := `{"end":{"sum":{"seconds":1,"bits_per_second":1.5e8,"packets":304950,"lost_packets":5600,"lost_percent":1.8},
		"sum_sent":{"seconds":1,"bits_per_second":1.5e8,"packets":304950,"lost_packets":0},
		"sum_received":{"seconds":2,"bits_per_second":1.4e8,"packets":304814,"lost_packets":5600,"lost_percent":1.8}}}`
	udpOld := `{"end":{"sum":{"seconds":2,"bits_per_second":1e8,"packets":1000,"lost_packets":100,"lost_percent":10}}}`
	tests := []struct {
		name    string
		out     string
		udp     bool
		want    IperfResult
		wantErr bool
	}{
		{name: "tcp uses receiver", out: tcp, want: IperfResult{BitsPerSecond: 1.8e10}},
		{name: "udp counts received packets", out: udp, udp: true, want: IperfResult{BitsPerSecond: 1.4e8, PacketsPerSecond: (304814 - 5600) / 2.0, LostPercent: 1.8}},
		{name: "udp without sum_received", out: udpOld, udp: true, want: IperfResult{BitsPerSecond: 1e8, PacketsPerSecond: 450, LostPercent: 10}},
		{name: "iperf error", out: `{"error":"unable to connect to server: Connection refused"}`, wantErr: true},
		{name: "not json", out: "iperf3: error", wantErr: true},
		{name: "udp without packets", out: tcp, udp: true, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseIperf([]byte(tc.out), tc.udp)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseIperf error = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && (got.BitsPerSecond != tc.want.BitsPerSecond || math.Abs(got.PacketsPerSecond-tc.want.PacketsPerSecond) > 1e-6 || got.LostPercent != tc.want.LostPercent) {
				t.Errorf("ParseIperf = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestListensOn(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0164EF0A:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0164EF0A:1F90 0A00EF0A:8000 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
`
	tests := []struct {
		name string
		port uint16
		want bool
	}{
		{name: "listening", port: 5201, want: true},
		{name: "established only", port: 8080, want: false},
		{name: "absent", port: 9, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := listensOn([]byte(table), portSuffix(tc.port)); got != tc.want {
				t.Errorf("listensOn(%d) = %v, want %v", tc.port, got, tc.want)
			}
		})
	}
}

func TestWholeSeconds(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want int
	}{
		{time.Second, 1}, {1500 * time.Millisecond, 2}, {5 * time.Second, 5}, {0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.in.String(), func(t *testing.T) {
			if got := wholeSeconds(tc.in); got != tc.want {
				t.Errorf("wholeSeconds(%v) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}
