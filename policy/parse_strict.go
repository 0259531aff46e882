package policy

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"reflect"
	"sort"
	"strconv"
	"strings"

	kjson "sigs.k8s.io/json"
)

// This file implements strict decoding. A document (already turned into
// generic JSON values) is first checked against the Go type it will decode
// into, so that every mistyped value becomes a FieldError naming its path
// and saying what was expected (encoding/json would stop at the first one).
// Then sigs.k8s.io/json decodes it the way the Kubernetes API server does:
// case-sensitive field names, and every unknown or duplicate field
// reported with its field path.

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decodeGeneric parses JSON into generic values, keeping numbers exact.
func decodeGeneric(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// decodeStrict checks v against out's type, recording errors under base,
// and decodes v into out when the check passed. It reports whether out was
// filled.
func decodeStrict(errs *docErrors, base string, v any, out any) bool {
	before := len(errs.list)
	root := reflect.TypeOf(out).Elem()
	checkValue(errs, base, v, root)
	if len(errs.list) > before {
		return false
	}
	data, err := json.Marshal(v)
	if err != nil {
		errs.add(base, "decode: %v", err)
		return false
	}
	strict, err := kjson.UnmarshalStrict(data, out)
	if err != nil {
		errs.add(base, "decode: %s", cleanDecodeError(err))
		return false
	}
	for _, se := range strict {
		var fe kjson.FieldError
		if !errors.As(se, &fe) {
			errs.add(base, "%s", cleanDecodeError(se))
			continue
		}
		path := fe.FieldPath()
		reason := "duplicate field"
		if strings.HasPrefix(se.Error(), "unknown field") {
			parent, key := splitFieldPath(path)
			reason = unknownFieldReason(key, jsonFields(typeAt(root, parent)))
		}
		errs.add(joinPath(base, path), "%s", reason)
	}
	return len(strict) == 0
}

// splitFieldPath splits "a.b[0].c" into "a.b[0]" and "c".
func splitFieldPath(path string) (parent, key string) {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i], path[i+1:]
	}
	return "", path
}

// typeAt follows a field path ("spec.egress[0]") from t to the struct type
// it names; it returns an empty struct type when the path leaves the
// structs (then no field name can be suggested).
func typeAt(t reflect.Type, path string) reflect.Type {
	empty := reflect.TypeFor[struct{}]()
	for path != "" {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if strings.HasPrefix(path, "[") {
			end := strings.IndexByte(path, ']')
			if end < 0 || (t.Kind() != reflect.Slice && t.Kind() != reflect.Array) {
				return empty
			}
			t, path = t.Elem(), strings.TrimPrefix(path[end+1:], ".")
			continue
		}
		name := path
		if i := strings.IndexAny(path, ".["); i >= 0 {
			name, path = path[:i], strings.TrimPrefix(path[i:], ".")
		} else {
			path = ""
		}
		if t.Kind() != reflect.Struct {
			return empty
		}
		ft, ok := jsonFields(t)[name]
		if !ok {
			return empty
		}
		t = ft
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return empty
	}
	return t
}

// checkValue walks v (generic JSON) and t (the Go type it decodes into).
func checkValue(errs *docErrors, path string, v any, t reflect.Type) {
	if v == nil {
		return // null decodes to the zero value
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshalerType) {
		if t == reflect.TypeFor[json.RawMessage]() {
			return
		}
		data, err := json.Marshal(v)
		if err == nil {
			err = reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(data)
		}
		if err != nil {
			errs.add(path, "%s", cleanDecodeError(err))
		}
		return
	}
	if reflect.PointerTo(t).Implements(textUnmarshalerType) {
		s, ok := v.(string)
		if !ok {
			errs.add(path, "expected a string, got %s", describeJSON(v))
			return
		}
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			errs.add(path, "%s", cleanDecodeError(err))
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		checkValue(errs, path, v, t.Elem())
	case reflect.Interface:
		// Any value fits.
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			errs.add(path, "expected an object, got %s", describeJSON(v))
			return
		}
		fields := jsonFields(t)
		for _, k := range sortedKeys(m) {
			// Unknown fields are sigs.k8s.io/json's to report (decodeStrict).
			if ft, ok := fields[k]; ok {
				checkValue(errs, joinPath(path, k), m[k], ft)
			}
		}
	case reflect.Slice, reflect.Array:
		l, ok := v.([]any)
		if !ok {
			errs.add(path, "expected a list, got %s", describeJSON(v))
			return
		}
		for i, e := range l {
			checkValue(errs, indexPath(path, i), e, t.Elem())
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			errs.add(path, "expected an object, got %s", describeJSON(v))
			return
		}
		for _, k := range sortedKeys(m) {
			checkValue(errs, mapKeyPath(path, k), m[k], t.Elem())
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			errs.add(path, "expected a string, got %s", describeJSON(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			errs.add(path, "expected a boolean, got %s", describeJSON(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			errs.add(path, "expected an integer, got %s", describeJSON(v))
			return
		}
		if _, err := strconv.ParseInt(n.String(), 10, t.Bits()); err != nil {
			errs.add(path, "expected an integer in range, got %s", n)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			errs.add(path, "expected an integer, got %s", describeJSON(v))
			return
		}
		if _, err := strconv.ParseUint(n.String(), 10, t.Bits()); err != nil {
			errs.add(path, "expected a non-negative integer in range, got %s", n)
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			errs.add(path, "expected a number, got %s", describeJSON(v))
		}
	default:
		errs.add(path, "cannot decode into %s", t)
	}
}

// jsonFields maps the JSON names of t's fields to their types, flattening
// embedded structs without a name the way encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for k, v := range jsonFields(et) {
					if _, dup := out[k]; !dup {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// unknownFieldReason explains an unknown field, suggesting a field that
// differs only in case, and pointing out fields that exist elsewhere.
func unknownFieldReason(k string, fields map[string]reflect.Type) string {
	for name := range fields {
		if strings.EqualFold(name, k) {
			return "unknown field (did you mean " + strconv.Quote(name) + "?)"
		}
	}
	switch k {
	case "toFQDNs":
		return "unknown field (toFQDNs is only allowed in egress rules)"
	case "fromRequires", "toRequires", "toServices", "toGroups", "fromGroups", "fromNodes", "toNodes",
		"nodeSelector", "authentication", "kafka", "l7proto", "l7", "originatingTLS", "terminatingTLS",
		"serverNames", "listener", "cidrGroupRef", "cidrGroupSelector", "mismatch", "secret":
		return "unknown field (Cilium's " + k + " is not supported by moat)"
	}
	return "unknown field"
}

// mapKeyPath appends a map key to a path, quoting keys that are not plain
// identifiers (metadata.labels["app.kubernetes.io/name"]).
func mapKeyPath(base, k string) string {
	plain := k != ""
	for _, r := range k {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			plain = false
			break
		}
	}
	if plain {
		return joinPath(base, k)
	}
	return base + "[" + strconv.Quote(k) + "]"
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// describeJSON names the JSON type of a generic value for error messages.
func describeJSON(v any) string {
	switch x := v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "string " + strconv.Quote(x)
	case json.Number:
		return "number " + x.String()
	case bool:
		return "boolean " + strconv.FormatBool(x)
	}
	return "null"
}

// cleanDecodeError drops encoding/json's "json: " prefix from messages.
func cleanDecodeError(err error) string {
	return strings.TrimPrefix(err.Error(), "json: ")
}
