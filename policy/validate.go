package policy

import (
	"errors"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"

	"github.com/moatnet/moat/api/v1alpha1"
)

// checkRegex reports whether expr is a valid RE2 expression once anchored
// the way HTTP rules use it (^(?:expr)$).
func checkRegex(errs *docErrors, path, expr string) {
	if expr == "" {
		return
	}
	if _, err := regexp.Compile("^(?:" + expr + ")$"); err != nil {
		reason := err.Error()
		var se *syntax.Error
		if errors.As(err, &se) {
			reason = se.Code.String()
		}
		errs.add(path, "invalid regex %q: %s", expr, reason)
	}
}

// checkDNSName checks a DNS matchName (pattern=false) or matchPattern.
// Names may use letters, digits, '-', '.' and '_'; patterns also '*'. A
// "**." label is allowed only at the start of a pattern. One trailing dot
// is allowed.
func checkDNSName(errs *docErrors, path, s string, pattern bool) {
	what := "matchName"
	if pattern {
		what = "matchPattern"
	}
	if s == "" {
		errs.add(path, "%s must not be empty", what)
		return
	}
	if pattern && s == "*" {
		return
	}
	name := strings.TrimSuffix(s, ".")
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_'
		if pattern && c == '*' {
			ok = true
		}
		if !ok {
			if c == '*' {
				errs.add(path, "invalid %s %q: '*' is only allowed in matchPattern", what, s)
			} else {
				errs.add(path, "invalid %s %q: character %q not allowed (letters, digits, '-', '.', '_'%s)", what, s, c, map[bool]string{true: ", '*'"}[pattern])
			}
			return
		}
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if l == "" {
			errs.add(path, "invalid %s %q: empty label", what, s)
			return
		}
		if strings.Contains(l, "**") {
			if l != "**" || i != 0 {
				errs.add(path, "invalid %s %q: \"**.\" is only allowed as the leading label", what, s)
				return
			}
			if len(labels) == 1 {
				errs.add(path, "invalid %s %q: \"**\" must be followed by a domain, as in \"**.example.com\"", what, s)
				return
			}
		}
		if len(l) > 63 {
			errs.add(path, "invalid %s %q: label longer than 63 characters", what, s)
			return
		}
	}
	if len(name) > 253 {
		errs.add(path, "invalid %s %q: longer than 253 characters", what, s)
	}
}

// parsePortValue parses a port: "" and "0" mean every port. Named ports
// are not supported (moat has no container port names).
func parsePortValue(errs *docErrors, path, s string) (uint16, bool) {
	if s == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		errs.add(path, "invalid port %q: named ports are not supported, use a number", s)
		return 0, false
	}
	if n < 0 || n > 65535 {
		errs.add(path, "port %d out of range 0-65535", n)
		return 0, false
	}
	return uint16(n), true
}

// portRange builds the range of port/endPort, checking endPort.
func portRange(errs *docErrors, path string, port uint16, endPort int64) (PortRange, bool) {
	if endPort == 0 {
		return PortRange{From: port, To: port}, true
	}
	p := joinPath(path, "endPort")
	switch {
	case port == 0:
		errs.add(p, "endPort requires a non-zero port")
		return PortRange{}, false
	case endPort > 65535 || endPort < 0:
		errs.add(p, "endPort %d out of range 0-65535", endPort)
		return PortRange{}, false
	case endPort < int64(port):
		errs.add(p, "endPort %d is below port %d", endPort, port)
		return PortRange{}, false
	}
	return PortRange{From: port, To: uint16(endPort)}, true
}

// parseProtocol parses a toPorts protocol; "" means ANY.
func parseProtocol(errs *docErrors, path, s string) (Protocol, bool) {
	switch s {
	case "", "ANY":
		return ProtoAny, true
	case "TCP":
		return ProtoTCP, true
	case "UDP":
		return ProtoUDP, true
	case "SCTP":
		return ProtoSCTP, true
	case "ICMP", "ICMPv6", "ICMPV6":
		errs.add(path, "protocol %s is not allowed in ports: use icmps", s)
		return 0, false
	}
	errs.add(path, "invalid protocol %q: must be TCP, UDP, SCTP or ANY", s)
	return 0, false
}

// parseCIDR parses a prefix; a bare address means a single host. The
// prefix is masked ("10.1.2.3/8" → "10.0.0.0/8").
func parseCIDR(errs *docErrors, path, s string) (netip.Prefix, bool) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs.add(path, "invalid CIDR %q", s)
			return netip.Prefix{}, false
		}
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		errs.add(path, "invalid CIDR %q", s)
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// convertCIDRRule parses a cidr with its exceptions, each of which must lie
// inside the cidr.
func convertCIDRRule(errs *docErrors, path, cidr string, except []string) (CIDRRule, bool) {
	p, ok := parseCIDR(errs, joinPath(path, "cidr"), cidr)
	if !ok {
		return CIDRRule{}, false
	}
	out := CIDRRule{Prefix: p}
	for i, e := range except {
		ep := indexPath(joinPath(path, "except"), i)
		x, ok := parseCIDR(errs, ep, e)
		if !ok {
			continue
		}
		if x.Addr().Is4() != p.Addr().Is4() || x.Bits() < p.Bits() || !p.Contains(x.Addr()) {
			errs.add(ep, "except %s is not inside cidr %s", x, p)
			continue
		}
		out.Except = append(out.Except, x)
	}
	return out, len(out.Except) == len(except)
}

// parseEntity checks an entity name.
func parseEntity(errs *docErrors, path, s string) (Entity, bool) {
	switch e := Entity(s); e {
	case EntityWorld, EntityCluster, EntityHost, EntityRemoteNode, EntityKubeAPIServer, EntityAll:
		return e, true
	}
	errs.add(path, "unknown entity %q (supported: world, cluster, host, remote-node, kube-apiserver, all)", s)
	return "", false
}

// parseHeader turns "Name: value" (exact value) or "Name" (present) into
// a HeaderMatch. A space also separates name and value ("Name value"), as
// Cilium accepts.
func parseHeader(errs *docErrors, path, s string) (HeaderMatch, bool) {
	s = strings.TrimSpace(s)
	var h HeaderMatch
	if name, value, ok := strings.Cut(s, ":"); ok {
		h = HeaderMatch{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value), HasValue: true}
	} else if name, value, ok := strings.Cut(s, " "); ok {
		h = HeaderMatch{Name: name, Value: strings.TrimSpace(value), HasValue: true}
	} else {
		h = HeaderMatch{Name: s}
	}
	if !validHeaderName(h.Name) {
		errs.add(path, "invalid header %q: the name must be a non-empty HTTP token", s)
		return HeaderMatch{}, false
	}
	if strings.ContainsAny(h.Value, "\x00\r\n") {
		errs.add(path, "invalid header %q: control characters in value", s)
		return HeaderMatch{}, false
	}
	return h, true
}

// validHeaderName checks an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// icmpTypeByName maps the ICMP type names Cilium accepts to numbers.
func icmpTypeByName(family, name string) (uint8, bool) {
	names := map[string]uint8{
		"EchoReply": 0, "DestinationUnreachable": 3, "Redirect": 5, "EchoRequest": 8,
		"RouterAdvertisement": 9, "RouterSelection": 10, "TimeExceeded": 11, "ParameterProblem": 12,
		"Timestamp": 13, "TimestampReply": 14, "Photuris": 40, "ExtendedEchoRequest": 42, "ExtendedEchoReply": 43,
	}
	if family == "IPv6" {
		names = map[string]uint8{
			"DestinationUnreachable": 1, "PacketTooBig": 2, "TimeExceeded": 3, "ParameterProblem": 4,
			"EchoRequest": 128, "EchoReply": 129, "MulticastListenerQuery": 130, "MulticastListenerReport": 131,
			"MulticastListenerDone": 132, "RouterSolicitation": 133, "RouterAdvertisement": 134,
			"NeighborSolicitation": 135, "NeighborAdvertisement": 136, "RedirectMessage": 137,
			"ExtendedEchoRequest": 160, "ExtendedEchoReply": 161,
		}
	}
	n, ok := names[name]
	return n, ok
}

// parseICMPField checks one icmps[].fields[] entry.
func parseICMPField(errs *docErrors, path string, t v1alpha1.IntOrString, family string) (ICMPField, bool) {
	switch family {
	case "":
		family = "IPv4"
	case "IPv4", "IPv6":
	default:
		errs.add(joinPath(path, "family"), "invalid family %q: must be IPv4 or IPv6", family)
		return ICMPField{}, false
	}
	if t.Type == v1alpha1.IntOrStringString {
		n, ok := icmpTypeByName(family, t.StrVal)
		if !ok {
			if v, err := strconv.Atoi(t.StrVal); err == nil && v >= 0 && v <= 255 {
				return ICMPField{Family: family, Type: uint8(v)}, true
			}
			errs.add(joinPath(path, "type"), "unknown %s ICMP type %q", family, t.StrVal)
			return ICMPField{}, false
		}
		return ICMPField{Family: family, Type: n}, true
	}
	if t.IntVal < 0 || t.IntVal > 255 {
		errs.add(joinPath(path, "type"), "ICMP type %d out of range 0-255", t.IntVal)
		return ICMPField{}, false
	}
	return ICMPField{Family: family, Type: uint8(t.IntVal)}, true
}
