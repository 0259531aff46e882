package flow

import (
	"fmt"
	"slices"
	"strings"
)

// HandlerConfig is one enabled metrics handler with its options, as written
// in Hubble's `--metrics` syntax: `name` or `name:opt=val;opt=val;flag`.
type HandlerConfig struct {
	Name string
	// Options maps lower-cased option names to values ("" for flags).
	Options map[string]string
}

// MetricsConfig is the ordered list of enabled handlers.
type MetricsConfig []HandlerConfig

// Handler names.
const (
	HandlerDNS              = "dns"
	HandlerDrop             = "drop"
	HandlerTCP              = "tcp"
	HandlerFlow             = "flow"
	HandlerPortDistribution = "port-distribution"
	HandlerICMP             = "icmp"
	HandlerHTTPV2           = "httpV2"
)

// Option names (compared case-insensitively, as Hubble does).
const (
	optLabelsContext      = "labelscontext"
	optSourceContext      = "sourcecontext"
	optDestinationContext = "destinationcontext"
	optExemplars          = "exemplars"
	optQuery              = "query"
	optIgnoreAAAA         = "ignoreaaaa"
)

var contextOptionNames = []string{optLabelsContext, optSourceContext, optDestinationContext}

// handlerOptions lists the options each handler accepts besides the context
// options; flag options take no value.
var handlerOptions = map[string][]string{
	HandlerDNS:              {optQuery, optIgnoreAAAA},
	HandlerDrop:             nil,
	HandlerTCP:              nil,
	HandlerFlow:             nil,
	HandlerPortDistribution: nil,
	HandlerICMP:             nil,
	HandlerHTTPV2:           {optExemplars},
}

// flagOptions may appear without "=value".
var flagOptions = []string{optQuery, optIgnoreAAAA}

func handlerNames() []string {
	names := make([]string, 0, len(handlerOptions))
	for n := range handlerOptions {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func knownOption(handler, opt string) bool {
	return slices.Contains(contextOptionNames, opt) || slices.Contains(handlerOptions[handler], opt)
}

// ParseMetricsConfig parses a Hubble metrics option string. Handlers are
// separated by white space (Hubble's ConfigMap form, one `--metrics` entry
// per word) or by ";"; each is `name` or `name:opt=val;opt=val`. Inside the
// ";"-separated form a part that names a handler starts a new handler, any
// other part is an option of the handler before it, so both
//
//	dns drop httpV2:exemplars=true;labelsContext=source_namespace,destination_namespace
//	dns;drop;httpV2:exemplars=true;labelsContext=source_namespace,destination_namespace
//
// give the same configuration. Options and context labels are checked.
func ParseMetricsConfig(s string) (MetricsConfig, error) {
	return ParseMetricsList(strings.Fields(s))
}

// ParseMetricsList parses Hubble's `--metrics` list, one entry per element
// (each entry may itself hold several handlers, as in ParseMetricsConfig).
func ParseMetricsList(entries []string) (MetricsConfig, error) {
	var cfg MetricsConfig
	for _, entry := range entries {
		var cur *HandlerConfig
		for part := range strings.SplitSeq(entry, ";") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			name, firstOpt, hasOpt := strings.Cut(part, ":")
			startsHandler := !strings.Contains(name, "=")
			if startsHandler && !hasOpt && cur != nil {
				// A bare word: a handler name, or a flag option of the current handler.
				if _, isHandler := handlerOptions[name]; !isHandler && knownOption(cur.Name, strings.ToLower(name)) {
					startsHandler = false
				}
			}
			if !startsHandler {
				if cur == nil {
					return nil, fmt.Errorf("parse metrics %q: option %q comes before any handler", entry, part)
				}
				if err := addOption(cur, part); err != nil {
					return nil, fmt.Errorf("parse metrics %q: %w", entry, err)
				}
				continue
			}
			if _, ok := handlerOptions[name]; !ok {
				return nil, fmt.Errorf("parse metrics %q: unknown handler %q (known: %s)", entry, name, strings.Join(handlerNames(), ", "))
			}
			for _, h := range cfg {
				if h.Name == name {
					return nil, fmt.Errorf("parse metrics %q: handler %q given twice", entry, name)
				}
			}
			cfg = append(cfg, HandlerConfig{Name: name, Options: map[string]string{}})
			cur = &cfg[len(cfg)-1]
			if hasOpt && firstOpt != "" {
				if err := addOption(cur, firstOpt); err != nil {
					return nil, fmt.Errorf("parse metrics %q: %w", entry, err)
				}
			}
		}
	}
	for _, h := range cfg {
		if _, err := parseContextOptions(h.Options); err != nil {
			return nil, fmt.Errorf("parse metrics handler %s: %w", h.Name, err)
		}
	}
	return cfg, nil
}

func addOption(h *HandlerConfig, part string) error {
	key, val, hasVal := strings.Cut(part, "=")
	lk := strings.ToLower(strings.TrimSpace(key))
	if !knownOption(h.Name, lk) {
		known := append(slices.Clone(contextOptionNames), handlerOptions[h.Name]...)
		return fmt.Errorf("handler %s: unknown option %q (known: %s)", h.Name, key, strings.Join(known, ", "))
	}
	if !hasVal && !slices.Contains(flagOptions, lk) {
		return fmt.Errorf("handler %s: option %q needs a value (%s=...)", h.Name, key, key)
	}
	if _, dup := h.Options[lk]; dup {
		return fmt.Errorf("handler %s: option %q given twice", h.Name, key)
	}
	if lk == optExemplars && val != "true" && val != "false" {
		return fmt.Errorf("handler %s: option exemplars=%q: want true or false", h.Name, val)
	}
	h.Options[lk] = val
	return nil
}

// String renders the configuration back in Hubble's syntax, one handler per
// space-separated word.
func (c MetricsConfig) String() string {
	words := make([]string, 0, len(c))
	for _, h := range c {
		keys := make([]string, 0, len(h.Options))
		for k := range h.Options {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var opts []string
		for _, k := range keys {
			if v := h.Options[k]; v != "" || !slices.Contains(flagOptions, k) {
				opts = append(opts, canonicalOption(k)+"="+v)
			} else {
				opts = append(opts, canonicalOption(k))
			}
		}
		if len(opts) == 0 {
			words = append(words, h.Name)
		} else {
			words = append(words, h.Name+":"+strings.Join(opts, ";"))
		}
	}
	return strings.Join(words, " ")
}

func canonicalOption(k string) string {
	switch k {
	case optLabelsContext:
		return "labelsContext"
	case optSourceContext:
		return "sourceContext"
	case optDestinationContext:
		return "destinationContext"
	case optIgnoreAAAA:
		return "ignoreAAAA"
	}
	return k
}
