package policyload

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"reflect"
	"strconv"

	"github.com/moatnet/moat/policy"
)

// Key identifies a policy across files and reloads.
type Key struct {
	Kind      policy.Kind
	Namespace string
	Name      string
}

// KeyOf returns p's key.
func KeyOf(p *policy.Policy) Key { return Key{p.Kind, p.Namespace, p.Name} }

// FileError is the problem of one file (or of a path that could not be
// walked). Err is a policy.ErrorList whose entries name file, document and
// field path.
type FileError struct {
	File string
	Err  error
	// Previous is true when an earlier good version of the file stays in
	// force; false when nothing from this file is in force.
	Previous bool
}

// Error implements error: the file's errors, one per line.
func (e *FileError) Error() string { return e.Err.Error() }

// Unwrap exposes the ErrorList.
func (e *FileError) Unwrap() error { return e.Err }

// Result is what one Refresh found.
type Result struct {
	// Changed is true when the set of policies in force changed.
	Changed bool
	// ChangedFiles lists the files whose policies in force changed
	// (added, replaced or removed), sorted.
	ChangedFiles []string
	// Errors holds one entry per bad file or path, in load order.
	Errors []*FileError
}

// Err returns every error of r as one policy.ErrorList (nil when there is
// none), for callers that print one line per error.
func (r Result) Err() error {
	var all policy.ErrorList
	for _, fe := range r.Errors {
		var l policy.ErrorList
		if errors.As(fe.Err, &l) {
			all = append(all, l...)
			continue
		}
		all = append(all, &policy.FieldError{File: fe.File, Reason: fe.Err.Error()})
	}
	return all.Err()
}

// fileState is what the loader knows about one file.
type fileState struct {
	sum     [32]byte
	good    []policy.Policy // in force; nil with hasGood false: nothing
	hasGood bool
	// pending holds a version that parsed cleanly but defines a policy
	// another file owns; it is retried on every refresh.
	pending []policy.Policy
	err     error // the current content's problem
}

// Loader reads one or more policy paths and keeps, per file, the last good
// version: a bad edit leaves the file's previous policies in force. It is
// not safe for concurrent use.
type Loader struct {
	paths []string
	files map[string]*fileState
	order []string       // files in load order (walk order) as of the last refresh
	owner map[Key]string // which file's definition of a policy is in force
	// readFile is os.ReadFile; tests replace it.
	readFile func(string) ([]byte, error)
}

// New returns a loader of paths (files or directories).
func New(paths ...string) *Loader {
	return &Loader{
		paths:    append([]string(nil), paths...),
		files:    map[string]*fileState{},
		owner:    map[Key]string{},
		readFile: os.ReadFile,
	}
}

// Load reads paths once: the policies of every good file and, when any
// file is bad, a policy.ErrorList naming every problem. This is what the
// CLI uses; it equals a Loader's first Refresh.
func Load(paths ...string) ([]policy.Policy, error) {
	l := New(paths...)
	res := l.Refresh()
	return l.Policies(), res.Err()
}

// Refresh re-reads every path, parses the files whose content changed and
// resolves duplicate definitions. A path that cannot be listed (a vanished
// directory) keeps everything loaded from it in force and is reported.
func (l *Loader) Refresh() Result {
	var (
		res     Result
		order   []string
		seen    = map[string]bool{}
		kept    = map[string]bool{} // under a path that could not be walked
		changed = map[string]bool{}
	)
	for _, p := range l.paths {
		files, err := Files(p)
		if err != nil {
			res.Errors = append(res.Errors, &FileError{File: p, Err: pathError(p, err), Previous: l.hasFilesUnder(p)})
			for _, f := range l.order {
				if under(f, p) && !seen[f] {
					seen[f], kept[f] = true, true
					order = append(order, f)
				}
			}
			continue
		}
		for _, f := range files {
			if seen[f] {
				continue
			}
			seen[f] = true
			order = append(order, f)
		}
	}

	// Files that went away release their policies first, so that another
	// file may take over a name in the same refresh.
	for f, st := range l.files {
		if seen[f] {
			continue
		}
		if st.hasGood && len(st.good) > 0 {
			changed[f] = true
		}
		l.release(f, st.good)
		delete(l.files, f)
	}

	for _, f := range order {
		if kept[f] {
			continue
		}
		st := l.files[f]
		if st == nil {
			st = &fileState{}
			l.files[f] = st
		}
		data, err := l.readFile(f)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && st.err == nil && !st.hasGood {
				continue // removed between walk and read
			}
			st.sum = [32]byte{} // re-parse once it reads again
			st.pending = nil
			st.err = policy.ErrorList{{File: f, Reason: fsReason(f, err)}}
			continue
		}
		sum := sha256.Sum256(data)
		if st.sum == sum {
			continue
		}
		st.sum = sum
		st.pending = nil
		pols, perr := policy.ParseBytes(f, data)
		if perr != nil {
			st.err = perr
			continue
		}
		st.err = nil
		st.pending = pols
	}

	// Accept pending versions in load order; a version that defines a
	// policy owned by another file waits. Passes repeat while one accepts
	// something, since an accepted version may free a name (b.yaml drops
	// "x" in the same refresh that a.yaml, earlier in order, takes it).
	for progress := true; progress; {
		progress = false
		for _, f := range order {
			st := l.files[f]
			if st == nil || st.pending == nil {
				continue
			}
			if dups := l.conflicts(f, st.pending); len(dups) > 0 {
				st.err = dups // retried on the next refresh too
				continue
			}
			if !st.hasGood || !samePolicies(st.good, st.pending) {
				changed[f] = true
			}
			l.release(f, st.good)
			st.good, st.hasGood, st.pending, st.err = st.pending, true, nil, nil
			for i := range st.good {
				l.owner[KeyOf(&st.good[i])] = f
			}
			progress = true
		}
	}

	for _, f := range order {
		if st := l.files[f]; st != nil && st.err != nil {
			res.Errors = append(res.Errors, &FileError{File: f, Err: st.err, Previous: st.hasGood})
		}
	}
	l.order = order
	for f := range changed {
		res.ChangedFiles = append(res.ChangedFiles, f)
	}
	sortStrings(res.ChangedFiles)
	res.Changed = len(res.ChangedFiles) > 0
	return res
}

// conflicts lists the policies of f's new version that another file owns.
func (l *Loader) conflicts(f string, pols []policy.Policy) policy.ErrorList {
	var errs policy.ErrorList
	for i := range pols {
		p := &pols[i]
		o, ok := l.owner[KeyOf(p)]
		if !ok || o == f {
			continue
		}
		first := "another file"
		if st := l.files[o]; st != nil {
			for j := range st.good {
				if KeyOf(&st.good[j]) == KeyOf(p) {
					first = o + " doc " + strconv.Itoa(st.good[j].Source.Doc)
					break
				}
			}
		}
		errs = append(errs, &policy.FieldError{
			File: f, Doc: p.Source.Doc, Field: "metadata.name",
			Reason: "duplicate " + p.Ref() + " (first defined in " + first + ", which stays in force)",
		})
	}
	return errs
}

// release drops f's ownership of pols.
func (l *Loader) release(f string, pols []policy.Policy) {
	for i := range pols {
		k := KeyOf(&pols[i])
		if l.owner[k] == f {
			delete(l.owner, k)
		}
	}
}

// hasFilesUnder reports whether any file loaded from path is in force.
func (l *Loader) hasFilesUnder(path string) bool {
	for f, st := range l.files {
		if st.hasGood && under(f, path) {
			return true
		}
	}
	return false
}

// Policies returns the policies in force, in load order.
func (l *Loader) Policies() []policy.Policy {
	var out []policy.Policy
	for _, f := range l.order {
		if st := l.files[f]; st != nil && st.hasGood {
			out = append(out, st.good...)
		}
	}
	return out
}

// samePolicies reports whether two parsed versions of a file define the
// same policies (an edited comment changes nothing in force).
func samePolicies(a, b []policy.Policy) bool { return reflect.DeepEqual(a, b) }
