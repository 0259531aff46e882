package policy

import (
	"sort"
	"strings"

	"github.com/moatnet/moat/api/v1alpha1"
)

// convertSelector turns a Kubernetes label selector into a Selector.
// Label keys may carry a source prefix ("k8s:app", "any:app",
// "reserved:host"); a key without one matches labels of any source.
// matchLabels become In requirements with one value. Invalid or
// contradictory selectors are reported at path.
func convertSelector(errs *docErrors, path string, ls *v1alpha1.LabelSelector) Selector {
	var s Selector
	if ls == nil {
		return s
	}
	keys := make([]string, 0, len(ls.MatchLabels))
	for k := range ls.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := mapKeyPath(joinPath(path, "matchLabels"), k)
		src, key, ok := checkLabelKey(errs, p, k)
		if !ok {
			continue
		}
		v := ls.MatchLabels[k]
		if !validLabelValue(v) {
			errs.add(p, "invalid label value %q: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v)
			continue
		}
		s.Requirements = append(s.Requirements, Requirement{Source: src, Key: key, Operator: OpIn, Values: []string{v}})
	}
	for i, e := range ls.MatchExpressions {
		p := indexPath(joinPath(path, "matchExpressions"), i)
		src, key, ok := checkLabelKey(errs, joinPath(p, "key"), e.Key)
		if !ok {
			continue
		}
		op := Operator(e.Operator)
		switch op {
		case OpIn, OpNotIn:
			if len(e.Values) == 0 {
				errs.add(joinPath(p, "values"), "must not be empty for operator %s", op)
				continue
			}
		case OpExists, OpDoesNotExist:
			if len(e.Values) > 0 {
				errs.add(joinPath(p, "values"), "must be empty for operator %s", op)
				continue
			}
		default:
			errs.add(joinPath(p, "operator"), "unknown operator %q (use In, NotIn, Exists or DoesNotExist)", e.Operator)
			continue
		}
		vals := append([]string(nil), e.Values...)
		s.Requirements = append(s.Requirements, Requirement{Source: src, Key: key, Operator: op, Values: vals})
	}
	s = s.Normalized()
	if reason := contradiction(s); reason != "" {
		errs.add(path, "selector can never match: %s", reason)
	}
	return s
}

// checkLabelKey splits a label key into source and key and checks it.
func checkLabelKey(errs *docErrors, path, k string) (source, key string, ok bool) {
	source, key = ParseLabelKey(k)
	if key == "" {
		errs.add(path, "empty label key")
		return "", "", false
	}
	if strings.ContainsAny(key, " \t\r\n=,()") {
		errs.add(path, "invalid label key %q", k)
		return "", "", false
	}
	return source, key, true
}

// validLabelValue follows Kubernetes' label value rules.
func validLabelValue(v string) bool {
	if len(v) > 63 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && ((i == 0 || i == len(v)-1) || (c != '-' && c != '_' && c != '.')) {
			return false
		}
	}
	return true
}

// contradiction explains why no label set can satisfy s, or returns "".
// Requirements on the same key are compared regardless of source, since an
// endpoint never carries one key from two sources.
func contradiction(s Selector) string {
	type keyState struct {
		in          map[string]bool // nil: no In requirement
		notIn       map[string]bool
		exists      bool
		doesNotExit bool
	}
	states := map[string]*keyState{}
	var order []string
	for _, r := range s.Requirements {
		st := states[r.Key]
		if st == nil {
			st = &keyState{notIn: map[string]bool{}}
			states[r.Key] = st
			order = append(order, r.Key)
		}
		switch r.Operator {
		case OpIn:
			next := map[string]bool{}
			for _, v := range r.Values {
				if st.in == nil || st.in[v] {
					next[v] = true
				}
			}
			st.in = next
		case OpNotIn:
			for _, v := range r.Values {
				st.notIn[v] = true
			}
		case OpExists:
			st.exists = true
		case OpDoesNotExist:
			st.doesNotExit = true
		}
	}
	for _, k := range order {
		st := states[k]
		if st.doesNotExit && (st.exists || st.in != nil) {
			return "label " + k + " is required both to exist and not to exist"
		}
		if st.in != nil {
			left := 0
			for v := range st.in {
				if !st.notIn[v] {
					left++
				}
			}
			if left == 0 {
				return "no value of label " + k + " satisfies every requirement"
			}
		}
	}
	return ""
}

// namespaceRequirement restricts a selector to one namespace.
func namespaceRequirement(ns string) Requirement {
	return Requirement{Source: SourceK8s, Key: LabelNamespace, Operator: OpIn, Values: []string{ns}}
}

// constrainsNamespace reports whether s already says something about the
// endpoint's namespace.
func constrainsNamespace(s Selector) bool {
	for _, r := range s.Requirements {
		if r.Key == LabelNamespace {
			return true
		}
	}
	return false
}

// selectsReserved reports whether s names a reserved label
// ("reserved:host"); reserved identities have no namespace.
func selectsReserved(s Selector) bool {
	for _, r := range s.Requirements {
		if r.Source == SourceReserved {
			return true
		}
	}
	return false
}

// scopePeer restricts a peer selector of a namespaced policy to the
// policy's namespace unless it names the namespace itself or a reserved
// label (Cilium's rule for CiliumNetworkPolicy).
func scopePeer(s Selector, ns string) Selector {
	if ns == "" || constrainsNamespace(s) || selectsReserved(s) {
		return s
	}
	return s.With(namespaceRequirement(ns))
}
