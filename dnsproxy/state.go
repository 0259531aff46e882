package dnsproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moatnet/moat/policy"
)

// state.go owns the proxy's persisted state: the DNS rules and the FQDN
// cache, written to a file in the agent's state directory and restored
// before the proxy serves again, so that a restart neither refuses an
// allowed name nor forgets an address a toFQDNs rule allows.

// StateVersion is the version of the state file format.
const StateVersion = 1

// State is the proxy's persisted state.
type State struct {
	Version int                    `json:"version"`
	Rules   []EndpointRules        `json:"rules,omitempty"`
	FQDNs   []policy.FQDNSelection `json:"fqdns,omitempty"`
	Cache   []CacheEntry           `json:"cache,omitempty"`
	// Journal is the first journal (store.go) whose answers are not in
	// this snapshot.
	Journal uint64 `json:"journal,omitempty"`
}

// EndpointRules are the DNS rule sets of one endpoint.
type EndpointRules struct {
	Namespace string              `json:"namespace"`
	Name      string              `json:"name"`
	Sets      []policy.DNSRuleSet `json:"sets"`
}

// State returns the current policy and cache, ready to save.
func (p *Proxy) State() State {
	s := State{Version: StateVersion, Cache: p.cache.Entries()}
	cp := p.pol.Load()
	if cp == nil {
		return s
	}
	s.FQDNs = cp.src.FQDNs
	for k, sets := range cp.src.Endpoints {
		s.Rules = append(s.Rules, EndpointRules{Namespace: k.Namespace, Name: k.Name, Sets: sets})
	}
	slices.SortFunc(s.Rules, func(a, b EndpointRules) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return s
}

// Policy returns the state's rules as a Policy.
func (s *State) Policy() Policy {
	pol := Policy{Endpoints: make(map[EndpointKey][]policy.DNSRuleSet, len(s.Rules)), FQDNs: s.FQDNs}
	for _, r := range s.Rules {
		pol.Endpoints[EndpointKey{r.Namespace, r.Name}] = r.Sets
	}
	return pol
}

// SaveState writes s to path atomically (a temporary file in the same
// directory, synced, then renamed).
func SaveState(path string, s State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode dns proxy state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save dns proxy state %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save dns proxy state %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save dns proxy state %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save dns proxy state %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save dns proxy state %s: %w", path, err)
	}
	return nil
}

// LoadState reads a state file. A missing file is an error that
// errors.Is(err, os.ErrNotExist) recognises (first start).
func LoadState(path string) (State, error) {
	var s State
	b, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("load dns proxy state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("load dns proxy state %s: %w", path, err)
	}
	if s.Version != StateVersion {
		return State{}, fmt.Errorf("load dns proxy state %s: version %d, this agent reads %d", path, s.Version, StateVersion)
	}
	for i, e := range s.Cache {
		if !e.IP.IsValid() || e.Name == "" {
			return State{}, fmt.Errorf("load dns proxy state %s: cache[%d]: no name or address", path, i)
		}
	}
	return s, nil
}

// Restore installs a saved state before the proxy serves: the rules (as
// SetPolicy), the cache entries that have not expired (or that a live
// connection still uses), and then OnLearn for every restored name, so
// the agent re-takes their identities and ipcache entries. Errors are joined; what could be restored is restored.
func (p *Proxy) Restore(ctx context.Context, s State) error {
	var errs []error
	if err := p.SetPolicy(s.Policy()); err != nil {
		errs = append(errs, err)
	}
	restored := p.cache.restore(s.Cache)
	if p.cfg.OnLearn == nil {
		return errors.Join(errs...)
	}
	// Every restored name is learned again, also one the saved rules do
	// not select (the journal may be newer than the snapshot's rules): the
	// agent's compiler decides which addresses its selectors select.
	cp := p.pol.Load()
	for _, name := range sortedKeys(restored) {
		var sels []policy.FQDNSelection
		if cp != nil {
			sels = cp.selectorsFor(name)
		}
		if err := p.cfg.OnLearn(ctx, name, restored[name], sels); err != nil {
			errs = append(errs, fmt.Errorf("relearn %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string][]netip.Addr) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
