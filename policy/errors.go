package policy

import (
	"fmt"
	"strings"
)

// FieldError is one problem in a policy or endpoints document: where it is
// (file, 1-based document number, field path) and why it is wrong. Empty
// parts are left out of the message:
//
//	web.yaml: doc 2: spec.egress[0].toPorts[0].rules.http[1].path: invalid regex "(": missing closing )
type FieldError struct {
	File   string `json:"file,omitempty"`
	Doc    int    `json:"doc,omitempty"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

// Error implements error.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Doc > 0 {
		fmt.Fprintf(&b, "doc %d: ", e.Doc)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// ErrorList collects every FieldError found in a parse, in document order.
// Functions in this package return it as an error only when it is not
// empty; errors.As finds the individual *FieldError values.
type ErrorList []*FieldError

// Error renders one error per line.
func (l ErrorList) Error() string {
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Unwrap exposes the individual errors to errors.Is and errors.As.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// Err returns l as an error, or nil when l is empty (avoiding a non-nil
// error interface around an empty list).
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// docErrors records the errors of one document.
type docErrors struct {
	file string
	doc  int
	list ErrorList
}

// add records an error at field path with a formatted reason.
func (d *docErrors) add(field, format string, args ...any) {
	reason := format
	if len(args) > 0 {
		reason = fmt.Sprintf(format, args...)
	}
	d.list = append(d.list, &FieldError{File: d.file, Doc: d.doc, Field: field, Reason: reason})
}

// joinPath joins a field path and a child name ("spec" + "egress" →
// "spec.egress").
func joinPath(base, name string) string {
	if base == "" {
		return name
	}
	return base + "." + name
}

// indexPath appends a list index to a field path ("spec.egress" → "spec.egress[2]").
func indexPath(base string, i int) string {
	return base + "[" + itoa(i) + "]"
}
