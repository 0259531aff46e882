package agent

import (
	"errors"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/policyload"
)

// policySource reads the policy path (a file or a directory) through
// policyload, the loader the CLI uses too: per file, the last version that
// parsed cleanly stays in force; a policy defined by two files is an error
// of the later one and the earlier definition stays in force; hidden and
// editor files are ignored. A deleted file's policies go away.
type policySource struct {
	loader *policyload.Loader
	last   policyload.Result
}

func newPolicySource(path string) *policySource {
	return &policySource{loader: policyload.New(path)}
}

// refresh re-reads what changed. It returns whether the effective policy
// set changed and the current errors, one *policyload.FileError per bad
// file (its Previous field says whether an older version stays in force).
func (s *policySource) refresh() (changed bool, errs []error) {
	s.last = s.loader.Refresh()
	for _, fe := range s.last.Errors {
		errs = append(errs, fe)
	}
	return s.last.Changed, errs
}

// policies returns the policies in force, in load order, each defined once.
func (s *policySource) policies() []policy.Policy { return s.loader.Policies() }

// endpointsSource reads the endpoints file at path through policyload,
// keeping the last good content.
type endpointsSource struct {
	path   string
	reader *policyload.Endpoints
}

// refresh returns the current endpoints file when it changed; a bad file
// keeps the previous endpoints and returns the error.
func (s *endpointsSource) refresh() (*policy.EndpointsFile, bool, error) {
	if s.reader == nil {
		s.reader = policyload.NewEndpoints(s.path)
	}
	return s.reader.Refresh()
}

// policyKey identifies a policy across reloads.
type policyKey struct {
	kind            policy.Kind
	namespace, name string
}

func keyOf(p *policy.Policy) policyKey { return policyKey{p.Kind, p.Namespace, p.Name} }

// errDuplicatePolicy reports two documents defining the same policy. The
// loader rejects such a file (the earlier definition stays in force), so
// applyPolicies never sees a duplicate; the error is a safety net.
var errDuplicatePolicy = errors.New("defined more than once; the loader should have rejected the later file")

// StandalonePlan loads policies and an endpoints file exactly as the agent
// does (policyload) and compiles them for a node with the default endpoint
// config: what `moat policy compile|trace` explain. Any bad file is an
// error (a policy.ErrorList naming file, document and field): the CLI
// explains only a policy set that loads cleanly.
func StandalonePlan(policyPaths []string, endpointsFile string) (*policy.Plan, error) {
	policies, err := policyload.Load(policyPaths...)
	if err != nil {
		return nil, err
	}
	eps, err := policyload.LoadEndpoints(endpointsFile)
	if err != nil {
		return nil, err
	}
	return policy.Compile(policy.Input{
		Policies:   policies,
		Endpoints:  eps.Endpoints,
		Namespaces: eps.Namespaces,
		Node:       StandaloneNode(eps.Node, datapath.DefaultEndpointConfig()),
	})
}
