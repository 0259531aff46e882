package datapath

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/moatnet/moat/policy"
)

const (
	// epHostIfPrefix starts every host-side veth name the manager creates.
	epHostIfPrefix = "lxc"
	// epPodIfname is the pod-side veth name inside the netns.
	epPodIfname = "eth0"
	// epNetnsNameMax caps netns file names; longer names are truncated and
	// get a hash suffix. (NAME_MAX is 255; 64 keeps `ip netns` readable.)
	epNetnsNameMax = 64
	// epAliasTag starts the ifalias that marks a host veth as managed:
	// "moat:<netns prefix>:<namespace>/<name>".
	epAliasTag = "moat:"
	// epAliasMax is the kernel's limit on ifalias (IFALIASZ - 1).
	epAliasMax = 255
)

// epHash returns the first n hex digits of a SHA-256 over parts.
func epHash(n int, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:n]
}

// epHostIfname is the host-side veth name of an endpoint: "lxc" and 12 hex
// digits of a hash over the prefix, namespace and name (15 characters, the
// kernel's limit).
func epHostIfname(prefix string, ep policy.Endpoint) string {
	return epHostIfPrefix + epHash(12, prefix, ep.Namespace, ep.Name)
}

// epNetnsName is the netns file name of an endpoint:
// "<prefix><namespace>-<name>" when that is short and clean, else a sanitised,
// truncated form ending in "-" and 8 hex digits of a hash over the full name.
func epNetnsName(prefix string, ep policy.Endpoint) string {
	name := prefix + ep.Namespace + "-" + ep.Name
	if len(name) <= epNetnsNameMax && epCleanName(name) && name != "." && name != ".." {
		return name
	}
	sum := epHash(8, prefix, ep.Namespace, ep.Name)
	clean := []byte(name)
	for i, c := range clean {
		if !epCleanName(string(c)) {
			clean[i] = '_'
		}
	}
	keep := min(len(clean), epNetnsNameMax-len(sum)-1)
	return string(clean[:keep]) + "-" + sum
}

// epAlias is the ifalias that marks a host veth as belonging to ep.
func epAlias(prefix string, ep policy.Endpoint) string {
	return epAliasTag + prefix + ":" + ep.Namespace + "/" + ep.Name
}

// epParseAlias inverts epAlias; ok is false for aliases the manager did not
// write.
func epParseAlias(alias string) (prefix, namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(alias, epAliasTag)
	if !ok {
		return "", "", "", false
	}
	prefix, rest, ok = strings.Cut(rest, ":")
	if !ok || prefix == "" {
		return "", "", "", false
	}
	namespace, name, ok = strings.Cut(rest, "/")
	if !ok || name == "" {
		return "", "", "", false
	}
	return prefix, namespace, name, true
}

// epValidate checks what the manager needs from an endpoint.
func epValidate(prefix string, ep policy.Endpoint) error {
	var errs []error
	if ep.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if strings.ContainsAny(ep.Namespace, "/\x00") || strings.ContainsRune(ep.Name, 0) {
		errs = append(errs, errors.New("namespace must not contain '/' and names no NUL"))
	}
	if len(epAlias(prefix, ep)) > epAliasMax {
		errs = append(errs, fmt.Errorf("namespace and name are too long (%d bytes together)", len(ep.Namespace)+len(ep.Name)))
	}
	if !ep.IPv4.IsValid() && !ep.IPv6.IsValid() {
		errs = append(errs, errors.New("no IPv4 or IPv6 address"))
	}
	if ep.IPv4.IsValid() && (!ep.IPv4.Is4() || !ep.IPv4.IsGlobalUnicast() && !ep.IPv4.IsPrivate()) {
		errs = append(errs, fmt.Errorf("ipv4 %v is not a unicast IPv4 address", ep.IPv4))
	}
	if ep.IPv6.IsValid() && (!ep.IPv6.Is6() || ep.IPv6.Is4In6() || !ep.IPv6.IsGlobalUnicast()) {
		errs = append(errs, fmt.Errorf("ipv6 %v is not a global or unique-local IPv6 address", ep.IPv6))
	}
	if ep.Interface != "" && (len(ep.Interface) > 15 || strings.ContainsAny(ep.Interface, "/ \x00")) {
		errs = append(errs, fmt.Errorf("interface %q is not a valid interface name", ep.Interface))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("endpoint %s/%s: %w", ep.Namespace, ep.Name, err)
	}
	return nil
}
