package v1alpha1

import (
	"encoding/json"
	"testing"
)

func TestPortValueUnmarshal(t *testing.T) {
	tests := []struct {
		in      string
		want    PortValue
		wantErr bool
	}{
		{in: `"80"`, want: "80"},
		{in: `80`, want: "80"},
		{in: `"http"`, want: "http"},
		{in: `8.5`, wantErr: true},
		{in: `[1]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var p PortValue
			err := json.Unmarshal([]byte(tt.in), &p)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && p != tt.want {
				t.Errorf("got %q, want %q", p, tt.want)
			}
		})
	}
}

// TestRuleJSONNames decodes a Cilium rule with every supported field and
// checks that nothing is lost on a round trip.
func TestRuleJSONNames(t *testing.T) {
	in := `{"endpointSelector":{"matchLabels":{"app":"a"}},
"ingress":[{"fromEndpoints":[{}],"fromCIDR":["10.0.0.0/8"],"fromCIDRSet":[{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}],"fromEntities":["world"],
  "toPorts":[{"ports":[{"port":"80","endPort":90,"protocol":"TCP"}],"rules":{"http":[{"method":"GET","path":"/","host":"h","headers":["X"],"headerMatches":[{"name":"Y","value":"v"}]}]}}]}],
"ingressDeny":[{"icmps":[{"fields":[{"type":8,"family":"IPv4"}]}]}],
"egress":[{"toEndpoints":[{}],"toFQDNs":[{"matchName":"a.com","matchPattern":"*.a.com"}],"toPorts":[{"rules":{"dns":[{"matchPattern":"*"}]}}]}],
"egressDeny":[{"toCIDR":["1.2.3.4/32"]}],
"enableDefaultDeny":{"ingress":false,"egress":true},"description":"d"}`
	var r Rule
	if err := json.Unmarshal([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal([]byte(in), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("round trip differs:\n%s\n%s", ja, jb)
	}
}
