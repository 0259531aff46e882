package envoy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// SyncState says whether Envoy runs what the agent intends for one type.
type SyncState string

const (
	// SyncSynced: every intended resource is active in Envoy, equal to the
	// intended one, and Envoy has no other dynamic resource of the type.
	SyncSynced SyncState = "SYNCED"
	// SyncStale: Envoy lacks, differs in, or has more resources than the
	// agent intends (an update on its way, or a lost one).
	SyncStale SyncState = "STALE"
	// SyncNACKed: Envoy is not in sync and rejected an update of the type.
	SyncNACKed SyncState = "NACKED"
)

// TypeSync compares one resource type. Name lists are sorted.
type TypeSync struct {
	TypeURL string    `json:"type"`
	State   SyncState `json:"state"`
	// Versions are the distinct xDS versions of the active resources.
	Versions  []string       `json:"versions,omitempty"`
	Intended  int            `json:"intended"`
	Applied   int            `json:"applied"`
	Missing   []string       `json:"missing,omitempty"`   // intended, not active in Envoy
	Different []string       `json:"different,omitempty"` // active, but not equal to the intended one
	Extra     []string       `json:"extra,omitempty"`     // active in Envoy, not intended
	Warming   []string       `json:"warming,omitempty"`   // has a warming (not yet active) version
	NACKs     []ResourceNACK `json:"nacks,omitempty"`
}

// ResourceNACK is Envoy's record of a rejected update of one resource.
type ResourceNACK struct {
	Name    string                 `json:"name"`
	Version string                 `json:"version"`
	Details string                 `json:"details"`
	Time    *timestamppb.Timestamp `json:"-"`
}

// syncTypes are the dynamic types moat serves, in display order.
var syncTypes = []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType}

// SyncTypeName is the short name of a type URL ("listeners").
func SyncTypeName(typeURL string) string {
	switch typeURL {
	case resource.ListenerType:
		return "listeners"
	case resource.RouteType:
		return "routes"
	case resource.ClusterType:
		return "clusters"
	case resource.EndpointType:
		return "endpoints"
	}
	return typeURL
}

func singular(typeURL string) string {
	return strings.TrimSuffix(SyncTypeName(typeURL), "s")
}

// AppliedResource is one dynamic resource of a config dump.
type AppliedResource struct {
	TypeURL string
	Name    string
	Version string
	// Active is the running config, nil if there is none (a rejected
	// resource that was never accepted, or one that is only warming).
	Active proto.Message
	// Warming is the config Envoy is initialising, nil if none.
	Warming proto.Message
	// Error is the latest rejected update, nil if none.
	Error *adminv3.UpdateFailureState
}

// AppliedResources extracts the dynamic (xDS-delivered) listeners,
// clusters and route configurations of a config dump, keyed by type URL
// and name. It reads both the full dump and the per-resource shape that
// /config_dump?resource=… returns. Static (bootstrap) resources are left
// out.
func AppliedResources(dump *adminv3.ConfigDump) (map[string]map[string]*AppliedResource, error) {
	out := map[string]map[string]*AppliedResource{}
	get := func(typeURL, name string) *AppliedResource {
		if out[typeURL] == nil {
			out[typeURL] = map[string]*AppliedResource{}
		}
		r := out[typeURL][name]
		if r == nil {
			r = &AppliedResource{TypeURL: typeURL, Name: name}
			out[typeURL][name] = r
		}
		return r
	}
	var errs []string
	unpack := func(a *anypb.Any) proto.Message {
		if a == nil {
			return nil
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", a.GetTypeUrl(), err))
			return nil
		}
		return m
	}
	nameOf := func(m proto.Message, fe *adminv3.UpdateFailureState) string {
		if n, ok := m.(interface{ GetName() string }); ok && n.GetName() != "" {
			return n.GetName()
		}
		if fe != nil {
			if n, ok := unpack(fe.GetFailedConfiguration()).(interface{ GetName() string }); ok {
				return n.GetName()
			}
		}
		return ""
	}
	listener := func(dl *adminv3.ListenersConfigDump_DynamicListener) {
		r := get(resource.ListenerType, dl.GetName())
		if s := dl.GetActiveState(); s != nil {
			r.Active, r.Version = unpack(s.GetListener()), s.GetVersionInfo()
		}
		if s := dl.GetWarmingState(); s != nil {
			r.Warming = unpack(s.GetListener())
			if r.Version == "" {
				r.Version = s.GetVersionInfo()
			}
		}
		if dl.GetErrorState() != nil {
			r.Error = dl.GetErrorState()
		}
	}
	cluster := func(dc *adminv3.ClustersConfigDump_DynamicCluster, warming bool) {
		m := unpack(dc.GetCluster())
		name := nameOf(m, dc.GetErrorState())
		r := get(resource.ClusterType, name)
		switch {
		case m == nil:
		case warming:
			r.Warming = m
		default:
			r.Active, r.Version = m, dc.GetVersionInfo()
		}
		if dc.GetErrorState() != nil {
			r.Error = dc.GetErrorState()
		}
	}
	route := func(dr *adminv3.RoutesConfigDump_DynamicRouteConfig) {
		m := unpack(dr.GetRouteConfig())
		r := get(resource.RouteType, nameOf(m, dr.GetErrorState()))
		if m != nil {
			r.Active, r.Version = m, dr.GetVersionInfo()
		}
		if dr.GetErrorState() != nil {
			r.Error = dr.GetErrorState()
		}
	}
	for _, a := range dump.GetConfigs() {
		switch m := unpack(a).(type) {
		case *adminv3.ListenersConfigDump:
			for _, dl := range m.GetDynamicListeners() {
				listener(dl)
			}
		case *adminv3.ListenersConfigDump_DynamicListener:
			listener(m)
		case *adminv3.ClustersConfigDump:
			for _, dc := range m.GetDynamicActiveClusters() {
				cluster(dc, false)
			}
			for _, dc := range m.GetDynamicWarmingClusters() {
				cluster(dc, true)
			}
		case *adminv3.ClustersConfigDump_DynamicCluster:
			cluster(m, false)
		case *adminv3.RoutesConfigDump:
			for _, dr := range m.GetDynamicRouteConfigs() {
				route(dr)
			}
		case *adminv3.RoutesConfigDump_DynamicRouteConfig:
			route(m)
		}
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("read config dump: %s", strings.Join(errs, "; "))
	}
	return out, nil
}

// CompareSync compares the resources the agent intends (as
// Resources.ByType returns them) with a config dump, per type: listeners,
// routes and clusters always, then any other intended type. Resources are
// compared as protos with Any values unpacked at every depth, so encoding
// differences (map order inside packed configs) do not count.
func CompareSync(intended map[resource.Type][]types.Resource, dump *adminv3.ConfigDump) ([]TypeSync, error) {
	applied, err := AppliedResources(dump)
	if err != nil {
		return nil, err
	}
	var out []TypeSync
	for _, typeURL := range compareOrder(intended, applied) {
		out = append(out, compareType(typeURL, intended[typeURL], applied[typeURL]))
	}
	return out, nil
}

func compareOrder(intended map[resource.Type][]types.Resource, applied map[string]map[string]*AppliedResource) []string {
	order := slices.Clone(syncTypes)
	var more []string
	for t := range intended {
		if !slices.Contains(order, t) {
			more = append(more, t)
		}
	}
	for t := range applied {
		if !slices.Contains(order, t) && !slices.Contains(more, t) {
			more = append(more, t)
		}
	}
	slices.Sort(more)
	return append(order, more...)
}

func resourceName(r types.Resource) string {
	if n, ok := r.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return ""
}

func compareType(typeURL string, want []types.Resource, got map[string]*AppliedResource) TypeSync {
	ts := TypeSync{TypeURL: typeURL, Intended: len(want)}
	seen := map[string]bool{}
	for _, w := range want {
		name := resourceName(w)
		seen[name] = true
		g := got[name]
		switch {
		case g == nil || g.Active == nil:
			ts.Missing = append(ts.Missing, name)
		case !canonicalEqual(w, g.Active):
			ts.Different = append(ts.Different, name)
		}
	}
	versions := map[string]bool{}
	for name, g := range got {
		if g.Active != nil {
			ts.Applied++
			versions[g.Version] = true
			if !seen[name] {
				ts.Extra = append(ts.Extra, name)
			}
		}
		if g.Warming != nil {
			ts.Warming = append(ts.Warming, name)
		}
		if g.Error != nil {
			ts.NACKs = append(ts.NACKs, ResourceNACK{
				Name:    name,
				Version: g.Error.GetVersionInfo(),
				Details: g.Error.GetDetails(),
				Time:    g.Error.GetLastUpdateAttempt(),
			})
		}
	}
	for v := range versions {
		ts.Versions = append(ts.Versions, v)
	}
	slices.Sort(ts.Versions)
	slices.Sort(ts.Missing)
	slices.Sort(ts.Different)
	slices.Sort(ts.Extra)
	slices.Sort(ts.Warming)
	slices.SortFunc(ts.NACKs, func(a, b ResourceNACK) int { return strings.Compare(a.Name, b.Name) })
	switch {
	case len(ts.Missing)+len(ts.Different)+len(ts.Extra) == 0:
		// A NACK that a later accepted update superseded leaves Envoy in
		// sync; the NACKs stay listed.
		ts.State = SyncSynced
	case len(ts.NACKs) > 0:
		ts.State = SyncNACKed
	default:
		ts.State = SyncStale
	}
	return ts
}

// Summary is a one-line account of ts: "SYNCED (3, version v7)",
// "STALE: missing a, b; different c", "NACKED: x at v8: details".
func (ts TypeSync) Summary() string {
	var b strings.Builder
	b.WriteString(string(ts.State))
	var parts []string
	add := func(what string, names []string) {
		if len(names) > 0 {
			parts = append(parts, what+" "+strings.Join(names, ", "))
		}
	}
	for _, n := range ts.NACKs {
		parts = append(parts, fmt.Sprintf("rejected %s at version %q: %s", n.Name, n.Version, n.Details))
	}
	add("missing", ts.Missing)
	add("different", ts.Different)
	add("not intended", ts.Extra)
	add("warming", ts.Warming)
	if len(parts) > 0 {
		b.WriteString(": ")
		b.WriteString(strings.Join(parts, "; "))
	} else {
		fmt.Fprintf(&b, " (%d", ts.Applied)
		if len(ts.Versions) > 0 {
			fmt.Fprintf(&b, ", version %s", strings.Join(ts.Versions, ", "))
		}
		b.WriteString(")")
	}
	return b.String()
}

// Diff describes, resource by resource, how the config dump differs from
// the intended resources: missing and unexpected resources, rejected
// updates, and for a resource that differs a line diff of both sides
// rendered as indented protojson (Any values expanded, map keys sorted;
// "-" intended, "+" applied). Equality is decided on the protos, as in
// CompareSync, never on the text. It returns "" when Envoy runs
// exactly what is intended.
func Diff(intended map[resource.Type][]types.Resource, dump *adminv3.ConfigDump) (string, error) {
	applied, err := AppliedResources(dump)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, typeURL := range compareOrder(intended, applied) {
		want := map[string]types.Resource{}
		for _, r := range intended[typeURL] {
			want[resourceName(r)] = r
		}
		got := applied[typeURL]
		names := make([]string, 0, len(want)+len(got))
		for n := range want {
			names = append(names, n)
		}
		for n := range got {
			if _, ok := want[n]; !ok {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		kind := singular(typeURL)
		for _, n := range names {
			w, g := want[n], got[n]
			if g != nil && g.Error != nil && (g.Active == nil || w == nil || !canonicalEqual(w, g.Active)) {
				fmt.Fprintf(&b, "%s %q: rejected at version %q: %s\n", kind, n, g.Error.GetVersionInfo(), g.Error.GetDetails())
			}
			switch {
			case w == nil && g.Active != nil:
				fmt.Fprintf(&b, "%s %q: active in Envoy (version %q) but not intended\n", kind, n, g.Version)
			case w == nil:
			case g == nil || g.Active == nil:
				state := "missing from Envoy"
				if g != nil && g.Warming != nil {
					state = "warming in Envoy, not active yet"
				}
				fmt.Fprintf(&b, "%s %q: %s\n", kind, n, state)
			default:
				if canonicalEqual(w, g.Active) {
					continue
				}
				fmt.Fprintf(&b, "%s %q: differs (-intended +applied, version %q):\n", kind, n, g.Version)
				wl, werr := jsonLines(w)
				gl, gerr := jsonLines(g.Active)
				d := lineDiff(wl, gl, 3)
				if werr != nil || gerr != nil {
					d = cmp.Diff(w, g.Active, protocmp.Transform())
				}
				for line := range strings.Lines(d) {
					b.WriteString("  " + line)
				}
				if !strings.HasSuffix(d, "\n") {
					b.WriteString("\n")
				}
			}
		}
	}
	return b.String(), nil
}

// jsonLines renders m as indented protojson, one element per line.
// protojson varies its whitespace on purpose; json.Indent over the compact
// form makes both sides of a diff format alike.
func jsonLines(m proto.Message) ([]string, error) {
	raw, err := MarshalAdminJSON(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("indent %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return strings.Split(buf.String(), "\n"), nil
}
