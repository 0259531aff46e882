package policyload

import (
	"crypto/sha256"
	"fmt"

	"os"

	"github.com/moatnet/moat/policy"
)

// LoadEndpoints reads and validates an endpoints file. Errors name the file
// and the field path (a policy.ErrorList), or the file and why it could not
// be read.
func LoadEndpoints(path string) (*policy.EndpointsFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, policy.ErrorList{{File: path, Reason: "read endpoints file: " + fsReason(path, err)}}
	}
	return policy.ParseEndpoints(path, data)
}

// Endpoints reads one endpoints file incrementally, keeping the last good
// content in force when the file turns bad.
type Endpoints struct {
	path string
	sum  [32]byte
	good *policy.EndpointsFile
	err  error // the current content's problem
	read bool  // sum is the content last read
}

// NewEndpoints returns a reader of the endpoints file at path.
func NewEndpoints(path string) *Endpoints { return &Endpoints{path: path} }

// Path returns the file's path.
func (e *Endpoints) Path() string { return e.path }

// HasGood reports whether a good version of the file is in force.
func (e *Endpoints) HasGood() bool { return e.good != nil }

// Refresh returns the endpoints in force and whether they changed. When
// the file is bad the previous good content stays in force (HasGood says
// whether there is one) and the error names file and field.
func (e *Endpoints) Refresh() (*policy.EndpointsFile, bool, error) {
	data, err := os.ReadFile(e.path)
	if err != nil {
		e.read = false
		return e.good, false, fmt.Errorf("read endpoints: %w", err)
	}
	sum := sha256.Sum256(data)
	if e.read && sum == e.sum {
		return e.good, false, e.err // unchanged: the same answer as last time
	}
	e.sum, e.read = sum, true
	eps, err := policy.ParseEndpoints(e.path, data)
	if err != nil {
		e.err = err
		return e.good, false, err
	}
	e.good, e.err = eps, nil
	return eps, true, nil
}
