package dashboards

// model.go owns the small description every dashboard is written in
// (board, row, panel, query, variable) and its translation into Grafana's
// foundation SDK builders. The definitions stay readable as data; the SDK
// does the JSON.

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// DatasourceVar is the datasource variable of every dashboard: the name
// Hubble's dashboards use, so a Grafana that imports both asks once.
const DatasourceVar = "DS_PROMETHEUS"

// board is one dashboard.
type board struct {
	file        string // file name under charts/moat/dashboards
	uid, title  string
	description string
	vars        []variable
	rows        []row
}

type row struct {
	title  string
	panels []panel
}

type panelKind int

const (
	timeSeries panelKind = iota
	statPanel
	tablePanel
)

type panel struct {
	kind        panelKind
	title       string
	description string
	unit        string
	width       uint32 // grid columns (of 24); default 12
	queries     []query
}

// query is one PromQL target. instant queries are evaluated once at the
// end of the range (tables and stats of "the last N minutes").
type query struct {
	expr    string
	legend  string
	instant bool
}

// variable is a dashboard variable filled from label_values.
type variable struct {
	name, label string
	query       string // label_values(...) as Grafana's Prometheus datasource takes it
	multi       bool   // multi-select with "All" (matching every value, or none)
}

func ts(title, unit, description string, qs ...query) panel {
	return panel{kind: timeSeries, title: title, unit: unit, description: description, queries: qs}
}

func statOf(title, unit, description string, qs ...query) panel {
	return panel{kind: statPanel, title: title, unit: unit, description: description, queries: qs, width: 8}
}

func tableOf(title, description string, qs ...query) panel {
	for i := range qs {
		qs[i].instant = true
	}
	return panel{kind: tablePanel, title: title, description: description, queries: qs}
}

func q(expr, legend string) query { return query{expr: expr, legend: legend} }

func (p panel) wide() panel { p.width = 24; return p }

func ptr[T any](v T) *T { return &v }

func datasource() common.DataSourceRef {
	return common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr("${" + DatasourceVar + "}")}
}

// build turns a board into a Grafana dashboard.
func build(b board) (dashboard.Dashboard, error) {
	d := dashboard.NewDashboardBuilder(b.title).
		Uid(b.uid).
		Description(b.description).
		Tags([]string{"moat", "generated"}).
		Editable().
		Refresh("30s").
		Time("now-1h", "now").
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder(DatasourceVar).Label("Prometheus").Type("prometheus"))
	for _, v := range b.vars {
		vb := dashboard.NewQueryVariableBuilder(v.name).
			Label(v.label).
			Datasource(datasource()).
			Query(dashboard.StringOrMap{String: ptr(v.query)}).
			Definition(v.query).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc)
		if v.multi {
			// ".*" rather than a list of the values seen: it also matches
			// series without the label (a handler configured without that
			// context label), which a list never does.
			vb = vb.Multi(true).IncludeAll(true).AllValue(".*")
		}
		d = d.WithVariable(vb)
	}
	id := uint32(0)
	for _, r := range b.rows {
		id++
		d = d.WithRow(dashboard.NewRowBuilder(r.title).Id(id))
		for _, p := range r.panels {
			id++
			pb, err := panelBuilder(p, id)
			if err != nil {
				return dashboard.Dashboard{}, fmt.Errorf("%s: row %q: %w", b.file, r.title, err)
			}
			d = d.WithPanel(pb)
		}
	}
	out, err := d.Build()
	if err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("build dashboard %s: %w", b.file, err)
	}
	return out, nil
}

func panelBuilder(p panel, id uint32) (cog.Builder[dashboard.Panel], error) {
	if len(p.queries) == 0 {
		return nil, fmt.Errorf("panel %q has no query", p.title)
	}
	width := p.width
	if width == 0 {
		width = 12
	}
	var targets []cog.Builder[variants.Dataquery]
	for i, qu := range p.queries {
		t := prometheus.NewDataqueryBuilder().
			Expr(qu.expr).
			LegendFormat(qu.legend).
			RefId(string(rune('A' + i))).
			Datasource(datasource())
		if qu.instant {
			t = t.Instant().Format(prometheus.PromQueryFormatTable)
		} else {
			t = t.Range()
		}
		targets = append(targets, t)
	}
	switch p.kind {
	case timeSeries:
		return timeseries.NewPanelBuilder().Id(id).Title(p.title).Description(p.description).Unit(p.unit).
			Datasource(datasource()).Span(width).Height(8).Min(0).Targets(targets).
			Legend(common.NewVizLegendOptionsBuilder().DisplayMode(common.LegendDisplayModeTable).
				Placement(common.LegendPlacementBottom).ShowLegend(true).Calcs([]string{"lastNotNull", "max"})).
			Tooltip(common.NewVizTooltipOptionsBuilder().Mode(common.TooltipDisplayModeMulti).Sort(common.SortOrderDescending)), nil
	case statPanel:
		return stat.NewPanelBuilder().Id(id).Title(p.title).Description(p.description).Unit(p.unit).
			Datasource(datasource()).Span(width).Height(5).Targets(targets).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"})), nil
	case tablePanel:
		return table.NewPanelBuilder().Id(id).Title(p.title).Description(p.description).Unit(p.unit).
			Datasource(datasource()).Span(width).Height(8).Targets(targets), nil
	}
	return nil, fmt.Errorf("panel %q: unknown kind %d", p.title, p.kind)
}
