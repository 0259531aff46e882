// Package l7proxy is moat's embedded HTTP proxy: an xDS (ADS) client of the
// agent's xDS server that runs exactly the subset of Envoy's API that the
// envoy package emits, so that a node without Envoy enforces the same L7
// policy from the same resources.
//
// It owns: the ADS stream (state of the world, through internal/adsclient; listeners, their RDS route
// configurations and clusters), the validation of every resource against
// that subset (anything else is NACKed with a reason naming the resource and
// field), the transparent listeners with Envoy's filter-chain match, an
// HTTP/1.1 (and h2c with prior knowledge) server that applies the HTTP
// connection manager's options (path normalisation through
// internal/httpnorm, in its strict mode when path_with_escaped_slashes_action
// is REJECT_REQUEST and in Envoy's exact mode for UNESCAPE_AND_REDIRECT;
// underscore and smuggling rejection), the RBAC HTTP
// filter, routes to ORIGINAL_DST clusters with the cluster's SO_MARK, one
// gRPC access-log entry per exchange, and an admin interface (/ready,
// /config_dump, /stats/prometheus) that `moat envoy` reads like Envoy's.
//
// It must never know policies: it never imports policy, envoy, datapath or
// xds (tests may, to drive it with real translated resources). A config
// that it cannot run exactly is refused, never approximated: a resource the
// package accepts behaves as Envoy would, or the update is NACKed.
//
// A new configuration applies to the next request, on new and open
// connections alike: each request matches its connection's filter chain
// again in the current configuration, and a connection whose chain is gone
// gets 403 and is closed. Protocol upgrades are refused (403
// upgrade_failed), as Envoy does without upgrade_configs, so no connection
// ever leaves HTTP.
package l7proxy
