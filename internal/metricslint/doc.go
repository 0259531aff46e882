// Package metricslint runs Prometheus' promlint over a whole registry for
// tests, including the metric vectors that have no child yet (which a
// plain Gather would leave out, so that a bad name would pass until the
// first observation). It must never be imported by production code.
package metricslint
