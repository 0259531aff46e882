package dashboards

// promql.go names the metrics a PromQL expression selects, without a full
// PromQL parser: Prometheus itself (in the e2e test) judges whether the
// expression parses; this only has to find every metric name, which are
// the identifiers outside label matchers, ranges, strings and grouping
// lists that are not functions, aggregations or keywords.

import (
	"fmt"
	"slices"
	"strings"
)

// keywords are identifiers that are never metric names in an expression.
var keywords = []string{"and", "or", "unless", "bool", "offset", "inf", "nan", "start", "end"}

// aggregations may put their grouping before their argument.
var aggregations = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}

// groupings take a parenthesised list of label names.
var groupings = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdent(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

// MetricNames returns the metric names expr selects, sorted and without
// duplicates. A Grafana label_values(metric{...}, label) query gives its
// metric. It fails on unbalanced brackets and unterminated strings.
func MetricNames(expr string) ([]string, error) {
	names, _, err := scan(expr)
	return names, err
}

// LabelNames returns the label names expr matches on or groups by (and
// the label of a label_values query), sorted and without duplicates.
func LabelNames(expr string) ([]string, error) {
	_, labels, err := scan(expr)
	return labels, err
}

func addName(list []string, n string) []string {
	if n == "__name__" || slices.Contains(list, n) {
		return list
	}
	return append(list, n)
}

func scan(expr string) (names, labels []string, err error) {
	if rest, ok := strings.CutPrefix(strings.TrimSpace(expr), "label_values("); ok {
		// label_values(selector, label): only the selector names a metric.
		if i := strings.LastIndex(rest, ","); i >= 0 {
			labels = addName(labels, strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest[i+1:]), ")")))
			expr = rest[:i]
		} else {
			expr = strings.TrimSuffix(rest, ")")
		}
	}
	closer := map[byte]byte{'{': '}', '[': ']', '(': ')'}
	var stack []byte
	skipGroup := false
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for ; j < len(expr) && expr[j] != c; j++ {
				if expr[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(expr) {
				return nil, nil, fmt.Errorf("metric names of %q: unterminated string at offset %d", expr, i)
			}
			i = j + 1
		case c == '{' || c == '[' || c == '(':
			stack = append(stack, closer[c])
			if c == '(' && skipGroup {
				// by (...), on (...): label names, not metrics.
				j := strings.IndexByte(expr[i:], ')')
				if j < 0 {
					return nil, nil, fmt.Errorf("metric names of %q: unbalanced ( at offset %d", expr, i)
				}
				for l := range strings.SplitSeq(expr[i+1:i+j], ",") {
					if l = strings.TrimSpace(l); l != "" {
						labels = addName(labels, l)
					}
				}
				stack = stack[:len(stack)-1]
				i += j + 1
				skipGroup = false
				continue
			}
			i++
		case c == '}' || c == ']' || c == ')':
			if len(stack) == 0 || stack[len(stack)-1] != c {
				return nil, nil, fmt.Errorf("metric names of %q: unbalanced %c at offset %d", expr, c, i)
			}
			stack = stack[:len(stack)-1]
			i++
		case c == '$':
			// A Grafana variable ($__rate_interval, ${cluster}): not a metric.
			j := i + 1
			if j < len(expr) && expr[j] == '{' {
				k := strings.IndexByte(expr[j:], '}')
				if k < 0 {
					return nil, nil, fmt.Errorf("metric names of %q: unterminated ${ at offset %d", expr, i)
				}
				i = j + k + 1
				continue
			}
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			i = j
		case c >= '0' && c <= '9', c == '.' && i+1 < len(expr) && expr[i+1] >= '0' && expr[i+1] <= '9':
			// A number or a duration (0.99, 1e3, 5m, 1h30m).
			j := i + 1
			for j < len(expr) && (isIdent(expr[j]) || expr[j] == '.') {
				j++
			}
			i = j
		case isIdentStart(c):
			j := i + 1
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			i = j
			inside := len(stack) > 0 && (stack[len(stack)-1] == '}' || stack[len(stack)-1] == ']')
			if inside {
				// A label name in a matcher (followed by =, !=, =~, !~), or
				// a duration.
				if stack[len(stack)-1] == '}' {
					rest := strings.TrimLeft(expr[j:], " \t\n")
					if strings.HasPrefix(rest, "=") || strings.HasPrefix(rest, "!") {
						labels = addName(labels, word)
					}
				}
				continue
			}
			k := j
			for k < len(expr) && (expr[k] == ' ' || expr[k] == '\n' || expr[k] == '\t') {
				k++
			}
			lw := strings.ToLower(word)
			switch {
			case slices.Contains(groupings, lw):
				skipGroup = k < len(expr) && expr[k] == '('
			case slices.Contains(keywords, lw):
			case k < len(expr) && expr[k] == '(':
				// A function or aggregation call.
			case slices.Contains(aggregations, lw) && (strings.HasPrefix(expr[k:], "by") || strings.HasPrefix(expr[k:], "without")):
				// sum by (...) (...): an aggregation with its grouping first.
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
		default:
			i++
		}
	}
	if len(stack) > 0 {
		return nil, nil, fmt.Errorf("metric names of %q: %d unclosed brackets", expr, len(stack))
	}
	slices.Sort(names)
	slices.Sort(labels)
	return names, labels, nil
}
