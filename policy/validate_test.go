package policy

import (
	"errors"
	"strings"
	"testing"
)

// TestValidation checks single-error documents: the error's field path and
// reason.
func TestValidation(t *testing.T) {
	const meta = "metadata: {name: a}\n"
	egress := func(rule string) string {
		return ccnpHeader + meta + "spec:\n  endpointSelector: {}\n  egress:\n  - " + rule + "\n"
	}
	ports := func(ports, rules string) string {
		return egress("toPorts: [{ports: " + ports + ", rules: " + rules + "}]")
	}
	tests := []struct {
		name, doc, field, reason string
	}{
		{"bad method regex", ports(`[{port: "80"}]`, `{http: [{method: "GE[T"}]}`), "spec.egress[0].toPorts[0].rules.http[0].method", `invalid regex "GE[T": missing closing ]`},
		{"bad host regex", ports(`[{port: "80"}]`, `{http: [{host: "*.x"}]}`), "spec.egress[0].toPorts[0].rules.http[0].host", `invalid regex "*.x": missing argument to repetition operator`},
		{"bad header", ports(`[{port: "80"}]`, `{http: [{headers: [": v"]}]}`), "spec.egress[0].toPorts[0].rules.http[0].headers[0]", "invalid header"},
		{"bad headerMatches name", ports(`[{port: "80"}]`, `{http: [{headerMatches: [{name: "a b"}]}]}`), "spec.egress[0].toPorts[0].rules.http[0].headerMatches[0].name", "invalid header name"},
		{"http and dns", ports(`[{port: "53"}]`, `{http: [{}], dns: [{matchName: a.com}]}`), "spec.egress[0].toPorts[0].rules", "cannot be combined"},
		{"http on sctp", ports(`[{port: "80", protocol: SCTP}]`, `{http: [{}]}`), "spec.egress[0].toPorts[0].ports[0].protocol", "not SCTP"},
		{"dns on sctp", ports(`[{port: "53", protocol: SCTP}]`, `{dns: [{matchName: a.com}]}`), "spec.egress[0].toPorts[0].ports[0].protocol", "DNS rules need protocol UDP, TCP or ANY"},
		{"l7 on all ports", ports(`[{port: "0"}]`, `{http: [{}]}`), "spec.egress[0].toPorts[0].ports[0].port", "L7 rules need a specific port"},
		{"l7 without ports", egress(`toPorts: [{rules: {dns: [{matchPattern: "*"}]}}]`), "spec.egress[0].toPorts[0].ports", "at least one port"},
		{"dns empty", ports(`[{port: "53"}]`, `{dns: [{}]}`), "spec.egress[0].toPorts[0].rules.dns[0]", "set one of matchName and matchPattern"},
		{"dns both", ports(`[{port: "53"}]`, `{dns: [{matchName: a.com, matchPattern: "*.a.com"}]}`), "spec.egress[0].toPorts[0].rules.dns[0]", "exactly one"},
		{"dns star in name", ports(`[{port: "53"}]`, `{dns: [{matchName: "*.a.com"}]}`), "spec.egress[0].toPorts[0].rules.dns[0].matchName", "only allowed in matchPattern"},
		{"dns bad char", ports(`[{port: "53"}]`, `{dns: [{matchPattern: "a b.com"}]}`), "spec.egress[0].toPorts[0].rules.dns[0].matchPattern", "not allowed"},
		{"dns empty label", ports(`[{port: "53"}]`, `{dns: [{matchName: "a..com"}]}`), "spec.egress[0].toPorts[0].rules.dns[0].matchName", "empty label"},
		{"dns lone double star", ports(`[{port: "53"}]`, `{dns: [{matchPattern: "**"}]}`), "spec.egress[0].toPorts[0].rules.dns[0].matchPattern", "must be followed by a domain"},
		{"fqdn pattern", egress(`toFQDNs: [{matchPattern: "a.**"}]`), "spec.egress[0].toFQDNs[0].matchPattern", "leading label"},
		{"fqdn in egressDeny", ccnpHeader + meta + "spec: {endpointSelector: {}, egressDeny: [{toFQDNs: [{matchName: a.com}]}]}\n", "spec.egressDeny[0].toFQDNs", "not allowed in egressDeny"},
		{"named port", ports(`[{port: http}]`, `{}`), "spec.egress[0].toPorts[0].ports[0].port", "named ports are not supported"},
		{"negative port", ports(`[{port: -1}]`, `{}`), "spec.egress[0].toPorts[0].ports[0].port", "out of range"},
		{"endPort without port", ports(`[{endPort: 90}]`, `{}`), "spec.egress[0].toPorts[0].ports[0].endPort", "requires a non-zero port"},
		{"endPort too big", ports(`[{port: 80, endPort: 70000}]`, `{}`), "spec.egress[0].toPorts[0].ports[0].endPort", "out of range"},
		{"bad protocol", ports(`[{port: 80, protocol: tcp}]`, `{}`), "spec.egress[0].toPorts[0].ports[0].protocol", `invalid protocol "tcp"`},
		{"icmp protocol", ports(`[{port: 80, protocol: ICMP}]`, `{}`), "spec.egress[0].toPorts[0].ports[0].protocol", "use icmps"},
		{"bad cidr", egress(`toCIDR: [10.0.0.0/33]`), "spec.egress[0].toCIDR[0]", `invalid CIDR "10.0.0.0/33"`},
		{"except outside", egress(`toCIDRSet: [{cidr: 10.0.0.0/8, except: [11.0.0.0/24]}]`), "spec.egress[0].toCIDRSet[0].except[0]", "not inside cidr 10.0.0.0/8"},
		{"except wider", egress(`toCIDRSet: [{cidr: 10.0.0.0/16, except: [10.0.0.0/8]}]`), "spec.egress[0].toCIDRSet[0].except[0]", "not inside"},
		{"except other family", egress(`toCIDRSet: [{cidr: 10.0.0.0/8, except: ["fd00::/64"]}]`), "spec.egress[0].toCIDRSet[0].except[0]", "not inside"},
		{"unknown entity", egress(`toEntities: [galaxy]`), "spec.egress[0].toEntities[0]", `unknown entity "galaxy"`},
		{"icmps with toPorts", egress(`{toPorts: [{ports: [{port: "80"}]}], icmps: [{fields: [{type: 8}]}]}`), "spec.egress[0].icmps", "cannot be combined"},
		{"bad icmp type", egress(`icmps: [{fields: [{type: Ping}]}]`), "spec.egress[0].icmps[0].fields[0].type", "unknown IPv4 ICMP type"},
		{"bad icmp family", egress(`icmps: [{fields: [{type: 8, family: IPX}]}]`), "spec.egress[0].icmps[0].fields[0].family", "invalid family"},
		{"in without values", ccnpHeader + meta + "spec: {endpointSelector: {matchExpressions: [{key: a, operator: In}]}}\n", "spec.endpointSelector.matchExpressions[0].values", "must not be empty"},
		{"exists with values", ccnpHeader + meta + "spec: {endpointSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}\n", "spec.endpointSelector.matchExpressions[0].values", "must be empty"},
		{"bad operator", ccnpHeader + meta + "spec: {endpointSelector: {matchExpressions: [{key: a, operator: Equals, values: [x]}]}}\n", "spec.endpointSelector.matchExpressions[0].operator", "unknown operator"},
		{"in and does not exist", ccnpHeader + meta + "spec: {endpointSelector: {matchLabels: {a: x}, matchExpressions: [{key: a, operator: DoesNotExist}]}}\n", "spec.endpointSelector", "can never match"},
		{"disjoint in", ccnpHeader + meta + "spec:\n  endpointSelector: {}\n  ingress: [{fromEndpoints: [{matchLabels: {a: x}, matchExpressions: [{key: a, operator: In, values: [v]}]}]}]\n", "spec.ingress[0].fromEndpoints[0]", "no value of label a"},
		{"yaml 1.1 boolean", ccnpHeader + meta + "spec: {endpointSelector: {matchExpressions: [{key: a, operator: In, values: [y]}]}}\n", "spec.endpointSelector.matchExpressions[0].values[0]", "expected a string, got boolean true"},
		{"in minus notin", ccnpHeader + meta + "spec: {endpointSelector: {matchExpressions: [{key: a, operator: In, values: [x]}, {key: 'k8s:a', operator: NotIn, values: [x]}]}}\n", "spec.endpointSelector", "can never match"},
		{"empty label key", ccnpHeader + meta + "spec: {endpointSelector: {matchLabels: {'k8s:': x}}}\n", `spec.endpointSelector.matchLabels["k8s:"]`, "empty label key"},
		{"bad label value", ccnpHeader + meta + "spec: {endpointSelector: {matchLabels: {a: 'x y'}}}\n", "spec.endpointSelector.matchLabels.a", "invalid label value"},
		{"missing endpointSelector", ccnpHeader + meta + "spec: {ingress: [{}]}\n", "spec.endpointSelector", "required"},
		{"spec and specs", ccnpHeader + meta + "spec: {endpointSelector: {}}\nspecs: [{endpointSelector: {}}]\n", "specs", "mutually exclusive"},
		{"neither spec nor specs", ccnpHeader + meta, "spec", "one of spec or specs is required"},
		{"missing name", ccnpHeader + "metadata: {}\nspec: {endpointSelector: {}}\n", "metadata.name", "required"},
		{"wrong type port", ports(`[{port: [80]}]`, `{}`), "spec.egress[0].toPorts[0].ports[0].port", "expected a port number or string"},
		{"wrong type bool", ccnpHeader + meta + "spec: {endpointSelector: {}, enableDefaultDeny: {ingress: 'no'}}\n", "spec.enableDefaultDeny.ingress", `expected a boolean, got string "no"`},
		{"k8s empty peer", knpHeader + "metadata: {name: a}\nspec: {podSelector: {}, ingress: [{from: [{}]}]}\n", "spec.ingress[0].from[0]", "must specify"},
		{"k8s ipBlock with selector", knpHeader + "metadata: {name: a}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}\n", "spec.ingress[0].from[0].ipBlock", "cannot be combined"},
		{"k8s named port", knpHeader + "metadata: {name: a}\nspec: {podSelector: {}, ingress: [{ports: [{port: http}]}]}\n", "spec.ingress[0].ports[0].port", "named ports"},
		{"k8s port zero", knpHeader + "metadata: {name: a}\nspec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}\n", "spec.ingress[0].ports[0].port", "out of range 1-65535"},
		{"k8s protocol any", knpHeader + "metadata: {name: a}\nspec: {podSelector: {}, ingress: [{ports: [{protocol: ANY}]}]}\n", "spec.ingress[0].ports[0].protocol", "must be TCP, UDP or SCTP"},
		{"k8s endPort below", knpHeader + "metadata: {name: a}\nspec: {podSelector: {}, egress: [{ports: [{port: 90, endPort: 80}]}]}\n", "spec.egress[0].ports[0].endPort", "below port"},
		{"k8s policy type", knpHeader + "metadata: {name: a}\nspec: {podSelector: {}, policyTypes: [ingress]}\n", "spec.policyTypes[0]", "invalid policy type"},
		{"k8s except outside", knpHeader + "metadata: {name: a}\nspec: {podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.0.1.0/24]}}]}]}\n", "spec.egress[0].to[0].ipBlock.except[0]", "not inside"},
		{"unsupported cilium field", egress(`toServices: [{k8sService: {serviceName: a}}]`), "spec.egress[0].toServices", "Cilium's toServices is not supported by moat"},
		{"k8s missing podSelector field typo", knpHeader + "metadata: {name: a}\nspec: {podselector: {}}\n", "spec.podselector", `did you mean "podSelector"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pols, err := ParseBytes("v.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("parsed without error: %+v", pols)
			}
			if len(pols) != 0 {
				t.Errorf("got %d policies from an invalid document", len(pols))
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) != 1 {
				t.Fatalf("want exactly one FieldError, got:\n%v", err)
			}
			if list[0].Field != tt.field || list[0].Doc != 1 || list[0].File != "v.yaml" {
				t.Errorf("error at %q (doc %d, file %q), want %q: %v", list[0].Field, list[0].Doc, list[0].File, tt.field, list[0])
			}
			if !strings.Contains(list[0].Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", list[0].Reason, tt.reason)
			}
		})
	}
}

// TestValidationCollectsAllErrors checks that one document reports every
// problem, not only the first.
func TestValidationCollectsAllErrors(t *testing.T) {
	doc := ccnpHeader + `metadata: {}
spec:
  endpointSelector: {}
  egress:
  - toCIDR: [nope]
    toEntities: [moon]
    toPorts:
    - ports: [{port: "99999"}]
      rules: {http: [{path: "("}]}
`
	_, err := ParseBytes("v.yaml", []byte(doc))
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error = %v", err)
	}
	want := []string{
		"metadata.name",
		"spec.egress[0].toCIDR[0]",
		"spec.egress[0].toEntities[0]",
		"spec.egress[0].toPorts[0].ports[0].port",
		"spec.egress[0].toPorts[0].rules.http[0].path",
	}
	var got []string
	for _, e := range list {
		got = append(got, e.Field)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("fields:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestCheckDNSNameAccepts(t *testing.T) {
	tests := []struct {
		s       string
		pattern bool
	}{
		{"example.com", false},
		{"example.com.", false},
		{"_sip._tcp.example.com", false},
		{"*", true},
		{"*.example.com", true},
		{"**.example.com", true},
		{"api-*.example.com.", true},
	}
	for _, tt := range tests {
		t.Run(tt.s, func(t *testing.T) {
			errs := &docErrors{}
			checkDNSName(errs, "f", tt.s, tt.pattern)
			if len(errs.list) != 0 {
				t.Errorf("rejected: %v", errs.list)
			}
		})
	}
}
