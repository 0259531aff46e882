package l7proxy

import (
	"errors"
	"net/http"
	"strings"
)

// errUnexpectedSwitch is a 101 from an upstream to a request that asked for
// no upgrade (the proxy never forwards one).
var errUnexpectedSwitch = errors.New("upstream switched protocols without an upgrade request")

// upgradeOf applies to a request's headers what Envoy's HTTP/1 codec and
// connection manager do with Upgrade, and reports whether the request asks
// for an upgrade, which the proxy refuses (no accepted connection manager
// has upgrade_configs, so Envoy answers 403 upgrade_failed):
//
//   - "Upgrade: h2c" (the whole value) is ignored: Upgrade and
//     HTTP2-Settings are removed and the request is served as HTTP/1.1.
//     The proxy speaks h2c with prior knowledge only.
//   - Upgrade with a Connection header naming the "upgrade" token is an
//     upgrade request.
//   - Upgrade without that token is not one: the header is removed, so
//     neither the filters nor the upstream see it.
//
// HTTP/2 requests never carry Upgrade (the codec refuses it).
func upgradeOf(h http.Header) bool {
	vs, ok := h["Upgrade"]
	if !ok {
		return false
	}
	if strings.EqualFold(strings.TrimSpace(strings.Join(vs, ",")), "h2c") {
		delete(h, "Upgrade")
		delete(h, "Http2-Settings")
		return false
	}
	if hasToken(h["Connection"], "upgrade") {
		return true
	}
	delete(h, "Upgrade")
	return false
}

// hasToken reports whether a comma-separated header list names token
// (case-insensitive).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// refuseSwitch fails an upstream response that switches protocols: the
// request was never an upgrade, so a 101 would turn the connection into an
// unfiltered tunnel.
func refuseSwitch(resp *http.Response) error {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return errUnexpectedSwitch
	}
	return nil
}
