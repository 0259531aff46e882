package policy

import "encoding/json"

// ParseObject parses one policy object held as generic values (an object
// read from the Kubernetes API as unstructured content, whose numbers may
// be Go integers): the same kinds, checks, field paths and reasons as
// ParseBytes, with errors naming source (for example "NetworkPolicy.moat.io
// default/web") instead of a file and document. A List is not accepted
// here. When the error is not nil it is an ErrorList and the policy is nil.
func ParseObject(source string, obj map[string]any) (*Policy, error) {
	// The parser checks JSON's generic values: normalise through JSON.
	data, err := json.Marshal(obj)
	if err != nil {
		return nil, ErrorList{{File: source, Reason: "encode object: " + err.Error()}}
	}
	v, err := decodeGeneric(data)
	if err != nil {
		return nil, ErrorList{{File: source, Reason: "decode object: " + err.Error()}}
	}
	de := &docErrors{file: source}
	pols := parseObject(de, "", v, false)
	if err := de.list.Err(); err != nil {
		return nil, err
	}
	if len(pols) != 1 {
		return nil, ErrorList{{File: source, Reason: "not a policy object"}}
	}
	p := pols[0]
	p.Source = Source{File: source}
	return &p, nil
}
