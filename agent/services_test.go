package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/k8s"
	"github.com/moatnet/moat/policy"
)

func TestStaticServices(t *testing.T) {
	svcs, errs := staticServices([]StaticService{
		{Frontend: "10.96.0.10:80/tcp", Backends: []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{Frontend: "[fd00:96::10]:53/UDP", Backends: []string{"[fd00::1]:5353"}},
		{Frontend: "10.96.0.11:80/tcp"},
	})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	want := datapath.Frontend{Addr: netip.MustParseAddr("fd00:96::10"), Port: 53, Proto: policy.ProtoUDP}
	if got := svcs[want]; len(got) != 1 || got[0] != netip.MustParseAddrPort("[fd00::1]:5353") {
		t.Errorf("udp frontend: %v", got)
	}
	if len(svcs) != 3 {
		t.Errorf("%d frontends, want 3", len(svcs))
	}
}

func TestValidateServicesConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"bad entries name their field", Config{ServiceTranslation: true, Services: []StaticService{
			{Frontend: "10.96.0.10:80"},
			{Frontend: "10.96.0.10:80/sctp"},
			{Frontend: "10.96.0.11:80/tcp", Backends: []string{"nope", "[fd00::1]:80"}},
			{Frontend: "10.96.0.12:80/tcp"}, {Frontend: "10.96.0.12:80/tcp"},
		}}, []string{
			`services[0].frontend: "10.96.0.10:80": want address:port/proto`,
			`services[1].frontend: "10.96.0.10:80/sctp": protocol "sctp": want tcp or udp`,
			`services[2].backends[0]: "nope"`,
			`services[2]: service 10.96.0.11:80/tcp: backend [fd00::1]:80: address family differs`,
			`services[4].frontend: 10.96.0.12:80/tcp listed twice`,
		}},
		{"services without translation", Config{Services: []StaticService{{Frontend: "10.96.0.10:80/tcp"}}},
			[]string{"services: set serviceTranslation: true"}},
		{"services in kubernetes mode", Config{ServiceTranslation: true, InCluster: true, Services: []StaticService{{Frontend: "10.96.0.10:80/tcp"}}},
			[]string{"services: only in standalone mode"}},
		{"relative cgroup", Config{ServiceTranslation: true, ServiceCgroup: "sys/fs/cgroup"}, []string{`serviceCgroup: "sys/fs/cgroup" is not an absolute path`}},
		{"ok", Config{ServiceTranslation: true, Services: []StaticService{{Frontend: "10.96.0.10:80/tcp", Backends: []string{"10.0.0.1:80"}}}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			errs := c.cfg.validateServices()
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			if len(got) != len(c.want) {
				t.Fatalf("errors %q, want %d: %q", got, len(c.want), c.want)
			}
			for i := range got {
				if !strings.Contains(got[i], c.want[i]) {
					t.Errorf("error %d: %q, want it to contain %q", i, got[i], c.want[i])
				}
			}
		})
	}
}

func TestKubeServicesDropsWhatTheDatapathRefuses(t *testing.T) {
	fe := k8s.ServiceFrontend{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: policy.ProtoTCP}
	bad := k8s.ServiceFrontend{Addr: netip.MustParseAddr("10.96.0.11"), Port: 80, Proto: policy.ProtoTCP}
	got := kubeServices([]k8s.ServiceEntry{
		{Frontend: fe, Backends: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:8080")}},
		{Frontend: bad, Backends: []netip.AddrPort{netip.MustParseAddrPort("[fd00::1]:8080")}},
	})
	if len(got) != 1 || len(got[datapath.Frontend(fe)]) != 1 {
		t.Fatalf("table %v", got)
	}
}
