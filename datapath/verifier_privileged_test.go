package datapath

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/moatnet/moat/internal/testutil"
)

// verifierBudget is the share of the kernel's one million instructions that
// a program's verification may take. The tc programs once took 83% of it,
// where any new branch could push them over and leave a node that cannot
// load its datapath; parsing and policy lookups are global functions now,
// verified once each, and this keeps the headroom from wearing away.
const verifierBudget = 300_000

var processedRe = regexp.MustCompile(`processed (\d+) insns`)

func TestPrivilegedVerifierBudget(t *testing.T) {
	testutil.Privileged(t)
	spec, err := loadMoat()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Programs: ebpf.ProgramOptions{LogLevel: ebpf.LogLevelStats},
	})
	testutil.Require(t, "load the tc programs", err)
	defer coll.Close()
	for _, name := range []string{"from_endpoint", "to_endpoint"} {
		p := coll.Programs[name]
		if p == nil {
			t.Fatalf("program %s not in the collection", name)
		}
		m := processedRe.FindStringSubmatch(p.VerifierLog)
		if m == nil {
			t.Fatalf("%s: no instruction count in the verifier log %q", name, p.VerifierLog)
		}
		n, _ := strconv.Atoi(m[1])
		t.Logf("%s: verifier processed %d instructions", name, n)
		if n > verifierBudget {
			t.Errorf("%s: the verifier processed %d instructions, over the budget of %d (the kernel's limit is 1,000,000)", name, n, verifierBudget)
		}
	}
}
