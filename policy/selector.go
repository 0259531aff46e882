package policy

import (
	"sort"
	"strings"
)

// Operator is a label selector requirement operator.
type Operator string

// Operators of matchExpressions.
const (
	OpIn           Operator = "In"
	OpNotIn        Operator = "NotIn"
	OpExists       Operator = "Exists"
	OpDoesNotExist Operator = "DoesNotExist"
)

// Requirement is one condition on one label key. Source "" or "any" matches a
// label of any source.
type Requirement struct {
	Source   string   `json:"source,omitempty"`
	Key      string   `json:"key"`
	Operator Operator `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Selector is a conjunction of requirements (matchLabels are turned into In
// requirements with one value). The zero Selector selects everything.
type Selector struct {
	Requirements []Requirement `json:"requirements,omitempty"`
}

// Matches reports whether the labels satisfy every requirement.
func (s Selector) Matches(ls Labels) bool {
	for _, r := range s.Requirements {
		v, ok := ls.Get(r.Source, r.Key)
		switch r.Operator {
		case OpIn:
			if !ok || !contains(r.Values, v) {
				return false
			}
		case OpNotIn:
			if ok && contains(r.Values, v) {
				return false
			}
		case OpExists:
			if !ok {
				return false
			}
		case OpDoesNotExist:
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// IsEmpty reports whether the selector has no requirement (selects all).
func (s Selector) IsEmpty() bool { return len(s.Requirements) == 0 }

// With returns a copy of s with one more requirement.
func (s Selector) With(r Requirement) Selector {
	out := Selector{Requirements: make([]Requirement, 0, len(s.Requirements)+1)}
	out.Requirements = append(out.Requirements, s.Requirements...)
	out.Requirements = append(out.Requirements, r)
	out.normalize()
	return out
}

// normalize sorts requirements and values so that equal selectors have equal
// String() forms.
func (s *Selector) normalize() {
	for i := range s.Requirements {
		sort.Strings(s.Requirements[i].Values)
	}
	sort.Slice(s.Requirements, func(i, j int) bool {
		return s.Requirements[i].String() < s.Requirements[j].String()
	})
}

// Normalized returns a copy of s in canonical order.
func (s Selector) Normalized() Selector {
	out := Selector{Requirements: make([]Requirement, len(s.Requirements))}
	for i, r := range s.Requirements {
		r.Values = append([]string(nil), r.Values...)
		out.Requirements[i] = r
	}
	out.normalize()
	return out
}

// String is a canonical rendering, usable as a map key once normalized.
func (s Selector) String() string {
	if len(s.Requirements) == 0 {
		return "{}"
	}
	parts := make([]string, len(s.Requirements))
	for i, r := range s.Requirements {
		parts[i] = r.String()
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// String renders one requirement ("k8s:app In (a,b)").
func (r Requirement) String() string {
	k := r.Key
	if r.Source != "" {
		k = r.Source + ":" + k
	}
	switch r.Operator {
	case OpExists, OpDoesNotExist:
		return k + " " + string(r.Operator)
	}
	return k + " " + string(r.Operator) + " (" + strings.Join(r.Values, ",") + ")"
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}
