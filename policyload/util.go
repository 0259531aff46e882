package policyload

import (
	"errors"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moatnet/moat/policy"
)

// under reports whether file is path or lies below it.
func under(file, path string) bool {
	if file == path {
		return true
	}
	rel, err := filepath.Rel(path, file)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// fsReason drops the path from an fs error, since the FieldError's File
// already names it ("stat: no such file or directory").
func fsReason(file string, err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == file {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

// pathError turns a walk error into an ErrorList naming the path.
func pathError(path string, err error) policy.ErrorList {
	return policy.ErrorList{{File: path, Reason: fsReason(path, err)}}
}

func sortStrings(s []string) { sort.Strings(s) }
