package policy

// ParseObject parses one policy object that is already decoded from JSON
// (an object read from the Kubernetes API, as unstructured content): the
// same kinds, checks, field paths and reasons as ParseBytes, with errors
// naming source (for example "CiliumNetworkPolicy default/web") instead of
// a file and document. A List is not accepted here. When the error is not
// nil it is an ErrorList and the policy is nil.
func ParseObject(source string, obj map[string]any) (*Policy, error) {
	de := &docErrors{file: source}
	pols := parseObject(de, "", obj, false)
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
