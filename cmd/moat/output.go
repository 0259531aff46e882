package main

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// writeStructured renders v as indented JSON or YAML.
func writeStructured(w io.Writer, format string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	switch format {
	case "json":
		_, err = w.Write(append(data, '\n'))
	case "yaml":
		var y []byte
		if y, err = yaml.JSONToYAML(data); err == nil {
			_, err = w.Write(y)
		}
	default:
		return fmt.Errorf("unknown output format %q: want json or yaml", format)
	}
	return err
}
