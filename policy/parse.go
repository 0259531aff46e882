package policy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/moatnet/moat/api/v1alpha1"
)

// ParseBytes parses the documents of one file; file names it in errors.
// Reading files and directories belongs to the loader beside this package
// (policyload), which the agent and the CLI share.
//
// A file may hold several YAML documents separated by "---" lines, split
// as kubectl splits them (splitDocuments); empty documents are ignored and
// the others are numbered from 1. Accepted
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

// splitDocuments splits a YAML stream into its documents with the reader
// kubectl uses (k8s.io/apimachinery/pkg/util/yaml), so that a file splits
// here exactly as it does for `kubectl apply -f`: a document ends at a line
// that starts with "---" followed by nothing but spaces or a comment; any
// other text after "---" is an error. Separator lines and empty documents
// are dropped; each document keeps the line of the file it starts on, for
// error messages. On a bad separator the documents before it are returned
// with the error, which names the separator's line; the rest of the file
// is not read.
func splitDocuments(data []byte) ([]rawDoc, error) {
	// The file's lines as the reader sees them (it splits at "\n" and drops a
	// "\r" before it), to place each document it returns.
	lines := bytes.SplitAfter(data, []byte("\n"))
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs []rawDoc
	next := 0 // index in lines of the first line not yet returned
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, separatorError(lines, next, err)
		}
		// The reader skipped the separator lines before the document.
		for next < len(lines) && bytes.HasPrefix(lines[next], []byte(docSeparator)) {
			next++
		}
		docs = append(docs, rawDoc{data: doc, line: next + 1})
		next += bytes.Count(doc, []byte("\n")) // the reader ends every line with one
	}
}

// docSeparator starts a line that separates documents.
const docSeparator = "---"

// separatorError names the line of the separator the reader rejected: the
// first line from line index from on that starts with "---" and goes on
// with more than spaces and a comment.
func separatorError(lines [][]byte, from int, err error) error {
	for i := from; i < len(lines); i++ {
		rest, ok := bytes.CutPrefix(bytes.TrimRight(lines[i], "\r\n"), []byte(docSeparator))
		if !ok {
			continue
		}
		if rest = bytes.TrimSpace(rest); len(rest) > 0 && rest[0] != '#' {
			return fmt.Errorf("line %d: %q is not a document separator: only spaces or a comment may follow %q on its line (the rest of the file is not read)",
				i+1, bytes.TrimRight(lines[i], "\r\n"), docSeparator)
		}
	}
	return fmt.Errorf("split YAML documents: %w", err)
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// textAfterDocumentEnd rejects a document that goes on after a "..." end
// marker line. YAML reads the text after it as another document, which
// neither the stream reader (it splits at "---" only) nor the YAML decoder
// (it reads the first document) would return: a policy there would be
// ignored without a word. Comments and blank lines may follow the marker.
// A marker line cannot occur inside a scalar (YAML forbids it there).
func textAfterDocumentEnd(doc rawDoc) error {
	marker := 0 // line of the end marker, once seen
	for i, line := range bytes.Split(doc.data, []byte("\n")) {
		line = bytes.TrimRight(line, "\r")
		if marker == 0 {
			if rest, ok := bytes.CutPrefix(line, []byte("...")); ok && (len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t') {
				marker = doc.line + i
			}
			continue
		}
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			return fmt.Errorf("line %d: text after the document end marker \"...\" (line %d) would start another document, which is not read; separate documents with \"---\"",
				doc.line+i, marker)
		}
	}
	return nil
}

// toGeneric turns one document into generic JSON values; nil means empty.
func toGeneric(doc rawDoc) (any, error) {
	trimmed := bytes.TrimSpace(doc.data)
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') && json.Valid(trimmed) {
		return decodeGeneric(trimmed)
	}
	if err := textAfterDocumentEnd(doc); err != nil {
		return nil, err
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
	docs, splitErr := splitDocuments(data)
	for _, raw := range docs {
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
	if splitErr != nil {
		// The document the bad separator ends (or starts) is not returned.
		de := &docErrors{file: file, doc: num + 1}
		de.add("", "invalid YAML: %v", splitErr)
		errs = append(errs, de.list...)
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
