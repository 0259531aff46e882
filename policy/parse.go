package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/moatnet/moat/api/v1alpha1"
)

// ParseBytes parses the documents of one file; file names it in errors.
// Reading files and directories belongs to the loader beside this package
// (policyload), which the agent and the CLI share.
//
// A file may hold several YAML documents separated by "---" lines; empty
// documents are ignored and the others are numbered from 1. Accepted
// documents:
//
//   - moat.io/v1alpha1 NetworkPolicy and ClusterwideNetworkPolicy
//   - cilium.io/v2 CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy
//   - networking.k8s.io/v1 NetworkPolicy
//   - v1 List of the above (what `kubectl get -o yaml` prints)
//
// Decoding is strict: unknown fields, mistyped values and invalid contents
// are reported. When the error is not nil it is an ErrorList holding every
// problem found, including a policy defined twice in the file; the
// policies of the valid documents are returned alongside it.
func ParseBytes(file string, data []byte) ([]Policy, error) {
	pols, errs := parseBytes(file, data)
	errs = append(errs, checkDuplicates(pols)...)
	return pols, errs.Err()
}

// rawDoc is one document of a file and the line it starts on.
type rawDoc struct {
	data []byte
	line int
}

// splitDocuments splits a multi-document YAML stream at "---" lines.
func splitDocuments(data []byte) []rawDoc {
	var (
		docs  []rawDoc
		cur   bytes.Buffer
		start = 1
	)
	lines := bytes.SplitAfter(data, []byte("\n"))
	for i, line := range lines {
		trimmed := bytes.TrimRight(line, "\r\n")
		if bytes.HasPrefix(trimmed, []byte("---")) && (len(trimmed) == 3 || trimmed[3] == ' ' || trimmed[3] == '\t') {
			docs = append(docs, rawDoc{data: bytes.Clone(cur.Bytes()), line: start})
			cur.Reset()
			start = i + 2
			if rest := bytes.TrimSpace(trimmed[3:]); len(rest) > 0 && rest[0] != '#' {
				// Content on the marker line belongs to the next document.
				start = i + 1
				cur.Write(rest)
				cur.WriteByte('\n')
			}
			continue
		}
		cur.Write(line)
	}
	return append(docs, rawDoc{data: cur.Bytes(), line: start})
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// toGeneric turns one document into generic JSON values; nil means empty.
func toGeneric(doc rawDoc) (any, error) {
	trimmed := bytes.TrimSpace(doc.data)
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') && json.Valid(trimmed) {
		return decodeGeneric(trimmed)
	}
	j, err := yaml.YAMLToJSONStrict(doc.data)
	if err != nil {
		// Report YAML line numbers relative to the file, not the document.
		msg := yamlLineRE.ReplaceAllStringFunc(err.Error(), func(s string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(s, "line "))
			return "line " + strconv.Itoa(n+doc.line-1)
		})
		msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
		return nil, errors.New(msg)
	}
	return decodeGeneric(j)
}

// parseBytes parses every document of one file.
func parseBytes(file string, data []byte) ([]Policy, ErrorList) {
	var (
		out  []Policy
		errs ErrorList
		num  int
	)
	for _, raw := range splitDocuments(data) {
		if len(bytes.TrimSpace(raw.data)) == 0 {
			continue
		}
		v, err := toGeneric(raw)
		if err == nil && v == nil {
			continue // only comments
		}
		num++
		de := &docErrors{file: file, doc: num}
		if err != nil {
			de.add("", "invalid YAML: %v", err)
			errs = append(errs, de.list...)
			continue
		}
		pols := parseObject(de, "", v, true)
		// parseObject returns nothing for a document with errors, except
		// the clean items of a List (whose errors name items[i]).
		errs = append(errs, de.list...)
		for i := range pols {
			pols[i].Source = Source{File: file, Doc: num}
		}
		out = append(out, pols...)
	}
	return out, errs
}

// typeHeader reads apiVersion and kind of a document.
type typeHeader struct {
	APIVersion string
	Kind       string
}

// parseObject dispatches one object by apiVersion and kind. Lists are
// accepted only at the top of a document (allowList).
func parseObject(errs *docErrors, base string, v any, allowList bool) []Policy {
	m, ok := v.(map[string]any)
	if !ok {
		errs.add(base, "expected an object, got %s", describeJSON(v))
		return nil
	}
	var h typeHeader
	for _, f := range []struct {
		name string
		dst  *string
	}{{"apiVersion", &h.APIVersion}, {"kind", &h.Kind}} {
		switch s := m[f.name].(type) {
		case string:
			*f.dst = s
		case nil:
			errs.add(joinPath(base, f.name), "required")
		default:
			errs.add(joinPath(base, f.name), "expected a string, got %s", describeJSON(s))
		}
	}
	if h.APIVersion == "" || h.Kind == "" {
		return nil
	}
	before := len(errs.list)
	var pol *Policy
	switch h.APIVersion + "/" + h.Kind {
	case "v1/List":
		if !allowList {
			errs.add(base, "nested List is not supported")
			return nil
		}
		return parseList(errs, base, m)
	case v1alpha1.APIVersion + "/" + KindEndpoints:
		// An endpoints file beside the policies: not a policy, and
		// LoadEndpointsFile validates it.
		return nil
	case v1alpha1.APIVersion + "/" + v1alpha1.KindNetworkPolicy:
		var o v1alpha1.NetworkPolicy
		if decodeStrict(errs, base, m, &o) {
			pol = convertCiliumLike(errs, base, KindMoatNetworkPolicy, &o.ObjectMeta, o.Spec, o.Specs, true)
		}
	case v1alpha1.APIVersion + "/" + v1alpha1.KindClusterwideNetworkPolicy:
		var o v1alpha1.ClusterwideNetworkPolicy
		if decodeStrict(errs, base, m, &o) {
			pol = convertCiliumLike(errs, base, KindMoatClusterwideNetworkPolicy, &o.ObjectMeta, o.Spec, o.Specs, false)
		}
	case v1alpha1.CiliumAPIVersion + "/" + v1alpha1.KindCiliumNetworkPolicy:
		var o v1alpha1.CiliumNetworkPolicy
		if decodeStrict(errs, base, m, &o) {
			pol = convertCiliumLike(errs, base, KindCiliumNetworkPolicy, &o.ObjectMeta, o.Spec, o.Specs, true)
		}
	case v1alpha1.CiliumAPIVersion + "/" + v1alpha1.KindCiliumClusterwideNetworkPolicy:
		var o v1alpha1.CiliumClusterwideNetworkPolicy
		if decodeStrict(errs, base, m, &o) {
			pol = convertCiliumLike(errs, base, KindCiliumClusterwideNetworkPolicy, &o.ObjectMeta, o.Spec, o.Specs, false)
		}
	case v1alpha1.KubernetesNetworkingAPIVersion + "/NetworkPolicy":
		var o v1alpha1.KubernetesNetworkPolicy
		if decodeStrict(errs, base, m, &o) {
			pol = convertKubernetesNetworkPolicy(errs, base, &o)
		}
	default:
		errs.add(joinPath(base, "kind"), "unsupported apiVersion/kind %q/%q (supported: %s/%s, %s/%s, %s/%s, %s/%s, %s/NetworkPolicy)",
			h.APIVersion, h.Kind,
			v1alpha1.APIVersion, v1alpha1.KindNetworkPolicy,
			v1alpha1.APIVersion, v1alpha1.KindClusterwideNetworkPolicy,
			v1alpha1.CiliumAPIVersion, v1alpha1.KindCiliumNetworkPolicy,
			v1alpha1.CiliumAPIVersion, v1alpha1.KindCiliumClusterwideNetworkPolicy,
			v1alpha1.KubernetesNetworkingAPIVersion)
		return nil
	}
	if pol == nil || len(errs.list) > before {
		return nil
	}
	return []Policy{*pol}
}

// parseList handles a v1 List: every item is parsed on its own, so one bad
// item does not hide the good ones.
func parseList(errs *docErrors, base string, m map[string]any) []Policy {
	for _, k := range sortedKeys(m) {
		switch k {
		case "apiVersion", "kind", "items", "metadata":
		default:
			errs.add(joinPath(base, k), "unknown field")
		}
	}
	items, ok := m["items"].([]any)
	if !ok && m["items"] != nil {
		errs.add(joinPath(base, "items"), "expected a list, got %s", describeJSON(m["items"]))
		return nil
	}
	var out []Policy
	for i, it := range items {
		out = append(out, parseObject(errs, indexPath(joinPath(base, "items"), i), it, false)...)
	}
	return out
}

// checkDuplicates reports policies defined twice (same kind, namespace and
// name): applying both would silently let the later one win in Kubernetes.
func checkDuplicates(pols []Policy) ErrorList {
	var errs ErrorList
	seen := map[string]Source{}
	for _, p := range pols {
		key := p.Ref()
		if first, dup := seen[key]; dup {
			errs = append(errs, &FieldError{
				File: p.Source.File, Doc: p.Source.Doc, Field: "metadata.name",
				Reason: "duplicate " + key + " (first defined in " + first.File + " doc " + strconv.Itoa(first.Doc) + ")",
			})
			continue
		}
		seen[key] = p.Source
	}
	return errs
}
