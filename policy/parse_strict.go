package policy

import (
	"bytes"
	"encoding"
	"encoding/json"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// This file implements strict decoding: a document (already turned into
// generic JSON values) is checked against the Go type it will decode into,
// and every unknown field or mistyped value becomes a FieldError naming its
// path. Only when the check passes is the document decoded with
// encoding/json, which then cannot fail on shape.

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
	checkValue(errs, base, v, reflect.TypeOf(out).Elem())
	if len(errs.list) > before {
		return false
	}
	data, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(data, out)
	}
	if err != nil {
		errs.add(base, "decode: %v", err)
		return false
	}
	return true
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
			ft, ok := fields[k]
			if !ok {
				errs.add(joinPath(path, k), "%s", unknownFieldReason(k, fields))
				continue
			}
			checkValue(errs, joinPath(path, k), m[k], ft)
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
