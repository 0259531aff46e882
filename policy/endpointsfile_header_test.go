package policy

import (
	"strings"
	"testing"
)

func TestEndpointsFileHeader(t *testing.T) {
	body := "endpoints:\n- {name: web, ipv4: 10.9.0.1}\n"
	cases := []struct {
		name, header, wantErr string
	}{
		{"no header", "", ""},
		{"header", "apiVersion: moat.io/v1alpha1\nkind: Endpoints\n", ""},
		{"wrong kind", "apiVersion: moat.io/v1alpha1\nkind: Pods\n", `ep.yaml: kind: "Pods": an endpoints file is kind Endpoints`},
		{"wrong apiVersion", "apiVersion: cilium.io/v2\nkind: Endpoints\n", `ep.yaml: apiVersion: "cilium.io/v2"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseEndpoints("ep.yaml", []byte(tc.header+body))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestPolicyParserSkipsEndpointsDocuments(t *testing.T) {
	data := "apiVersion: moat.io/v1alpha1\nkind: Endpoints\nendpoints:\n- {name: web, ipv4: 10.9.0.1}\n"
	pols, err := ParseBytes("ep.yaml", []byte(data))
	if err != nil || len(pols) != 0 {
		t.Fatalf("ParseBytes = %d policies, %v; want none and no error", len(pols), err)
	}
}
