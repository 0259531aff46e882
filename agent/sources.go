package agent

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moatnet/moat/policy"
)

// policySource reads the policy path (a file or a directory) and keeps, per
// file, the last version that parsed cleanly: a file that fails validation
// keeps its previous policies in force until it is fixed, and its errors are
// reported. A deleted file's policies go away.
type policySource struct {
	path  string
	files map[string]fileState
}

type fileState struct {
	sum      [32]byte
	policies []policy.Policy // last good
	good     bool            // some version of the file was valid
	err      error           // current error, if the latest content is bad
}

func newPolicySource(path string) *policySource {
	return &policySource{path: path, files: map[string]fileState{}}
}

// policyFiles lists the policy files under the path, sorted.
func (s *policySource) policyFiles() ([]string, error) {
	st, err := os.Stat(s.path)
	if err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	if !st.IsDir() {
		return []string{s.path}, nil
	}
	var out []string
	err = filepath.WalkDir(s.path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != s.path && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				out = append(out, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// refresh re-reads what changed. It returns whether the effective policy
// set changed and the current errors (one per bad file).
func (s *policySource) refresh() (changed bool, errs []error) {
	files, err := s.policyFiles()
	if err != nil {
		// Keep everything in force: a vanished directory is more likely a
		// mistake than a wish to drop every policy.
		return false, []error{err}
	}
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		seen[f] = true
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", f, err))
			continue
		}
		sum := sha256.Sum256(data)
		old, had := s.files[f]
		if had && old.sum == sum {
			if old.err != nil {
				errs = append(errs, old.err)
			}
			continue
		}
		pols, perr := policy.ParseBytes(f, data)
		if perr != nil {
			old.sum = sum
			old.err = perr
			s.files[f] = old // previous policies stay in force
			errs = append(errs, perr)
			continue
		}
		s.files[f] = fileState{sum: sum, policies: pols, good: true}
		changed = true
	}
	for f := range s.files {
		if !seen[f] {
			delete(s.files, f)
			changed = true
		}
	}
	return changed, errs
}

// policies returns the policies in force, in file order.
func (s *policySource) policies() []policy.Policy {
	names := make([]string, 0, len(s.files))
	for f := range s.files {
		names = append(names, f)
	}
	sort.Strings(names)
	var out []policy.Policy
	for _, f := range names {
		out = append(out, s.files[f].policies...)
	}
	return out
}

// endpointsSource reads the endpoints file, keeping the last good content.
type endpointsSource struct {
	path string
	sum  [32]byte
	good *policy.EndpointsFile
	err  error // the error of the content with sum, if it was bad
}

// refresh returns the current endpoints file when it changed; a bad file
// keeps the previous endpoints and returns the error.
func (s *endpointsSource) refresh() (*policy.EndpointsFile, bool, error) {
	data, err := os.ReadFile(s.path)
	if err != nil {
		return s.good, false, fmt.Errorf("read endpoints: %w", err)
	}
	sum := sha256.Sum256(data)
	if (s.good != nil || s.err != nil) && sum == s.sum {
		return s.good, false, s.err // unchanged: the same answer
	}
	eps, err := policy.ParseEndpoints(s.path, data)
	s.sum, s.err = sum, err
	if err != nil {
		return s.good, false, err
	}
	s.good = eps
	return eps, true, nil
}

// policyKey identifies a policy across reloads.
type policyKey struct {
	kind            policy.Kind
	namespace, name string
}

func keyOf(p *policy.Policy) policyKey { return policyKey{p.Kind, p.Namespace, p.Name} }

// errDuplicatePolicy reports two documents defining the same policy.
var errDuplicatePolicy = errors.New("defined more than once; the later file wins")
