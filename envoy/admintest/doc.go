// Package admintest serves an imitation of Envoy's admin interface for
// tests: /ready, /server_info, /config_dump (whole or ?resource=…), /stats,
// /stats/prometheus and POST /drain_listeners, on a unix socket or on
// 127.0.0.1:0, built from Envoy's own admin protos and marshalled with
// protojson the way Envoy does (snake_case field names).
//
// It is test support only: production code must never import it.
package admintest
