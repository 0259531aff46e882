// Command coredns is CoreDNS with only the plugins a cluster's kube-dns
// needs (kubernetes, forward, cache, health, ready, ...). The full plugin set
// pulls in every cloud provider's SDK and triples the build; the cluster
// harness runs this binary as the kube-dns Deployment. It lives in a module
// of its own because CoreDNS requires its own k8s.io versions, which must
// not move those of e2e/cluster/tools. scripts/k8s-bins.sh builds it.
package main

import (
	"github.com/coredns/coredns/coremain"

	// The plugins a Corefile for cluster DNS uses; the order of execution
	// comes from dnsserver's directive list, not from these imports.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func main() {
	coremain.Run()
}
