package policy

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The policy package does no file I/O: policyload reads policy directories
// for the agent and the CLI. Tests read their fixtures with these two
// helpers, which only list a flat directory (or take files) and hand the
// bytes to ParseBytes / ParseEndpoints. They keep ParseBytes' per-document
// behaviour (valid documents of a bad file are returned) so that parser
// tests can check both the errors and the survivors.

// ParseFiles parses fixture files and flat fixture directories.
func ParseFiles(paths ...string) ([]Policy, error) {
	var (
		out  []Policy
		errs ErrorList
	)
	for _, p := range paths {
		files := []string{p}
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			ents, err := os.ReadDir(p)
			if err != nil {
				return nil, err
			}
			files = files[:0]
			for _, e := range ents {
				switch strings.ToLower(filepath.Ext(e.Name())) {
				case ".yaml", ".yml", ".json":
					files = append(files, filepath.Join(p, e.Name()))
				}
			}
			sort.Strings(files)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			pols, l := parseBytes(f, data)
			out = append(out, pols...)
			errs = append(errs, l...)
		}
	}
	errs = append(errs, checkDuplicates(out)...)
	return out, errs.Err()
}

// LoadEndpointsFile parses a fixture endpoints file.
func LoadEndpointsFile(path string) (*EndpointsFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.Join(errors.New("read endpoints file"), err)
	}
	return ParseEndpoints(path, data)
}
