package adsclient

import "testing"

func TestGRPCTarget(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "absolute socket path", in: "/run/moat/xds.sock", want: "unix:/run/moat/xds.sock"},
		{name: "relative socket path", in: "./xds.sock", want: "unix:./xds.sock"},
		{name: "unix scheme", in: "unix:///run/moat/xds.sock", want: "unix:///run/moat/xds.sock"},
		{name: "ipv4 host and port", in: "127.0.0.1:18000", want: "passthrough:///127.0.0.1:18000"},
		{name: "ipv6 host and port", in: "[::1]:18000", want: "passthrough:///[::1]:18000"},
		{name: "empty", in: "", wantErr: true},
		{name: "unix scheme without path", in: "unix://", wantErr: true},
		{name: "host without port", in: "localhost", wantErr: true},
		{name: "empty port", in: "localhost:", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := grpcTarget(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("grpcTarget(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("grpcTarget(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
