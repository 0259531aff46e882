package dashboards

// queries.go reads dashboards back from their JSON, as a person's Grafana
// would get them, so that tests check the files that ship rather than the
// Go values that made them.

import (
	"encoding/json"
	"fmt"
)

// PanelQuery is one query of one panel.
type PanelQuery struct {
	Dashboard string // the dashboard's uid
	Panel     string // the panel's title
	PanelType string // timeseries, stat, table
	RefID     string
	Expr      string
	Legend    string
	Instant   bool // evaluated at the end of the range only
}

// Variable is one dashboard variable.
type Variable struct {
	Name, Type string
	Query      string // label_values(...) for query variables
	Multi      bool
	AllValue   string
}

// Parsed is what a dashboard's JSON says that the tests need.
type Parsed struct {
	UID, Title string
	Queries    []PanelQuery
	Variables  []Variable
}

type jsonPanel struct {
	Type    string      `json:"type"`
	Title   string      `json:"title"`
	Panels  []jsonPanel `json:"panels"` // a collapsed row's panels
	Targets []struct {
		RefID   string `json:"refId"`
		Expr    string `json:"expr"`
		Legend  string `json:"legendFormat"`
		Instant bool   `json:"instant"`
		Range   bool   `json:"range"`
	} `json:"targets"`
}

// Parse reads a dashboard's JSON.
func Parse(js []byte) (Parsed, error) {
	var d struct {
		UID        string      `json:"uid"`
		Title      string      `json:"title"`
		Panels     []jsonPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name     string          `json:"name"`
				Type     string          `json:"type"`
				Query    json.RawMessage `json:"query"`
				Multi    bool            `json:"multi"`
				AllValue string          `json:"allValue"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(js, &d); err != nil {
		return Parsed{}, fmt.Errorf("parse dashboard: %w", err)
	}
	if d.UID == "" {
		return Parsed{}, fmt.Errorf("parse dashboard %q: no uid", d.Title)
	}
	p := Parsed{UID: d.UID, Title: d.Title}
	var walk func([]jsonPanel) error
	walk = func(ps []jsonPanel) error {
		for _, jp := range ps {
			if err := walk(jp.Panels); err != nil {
				return err
			}
			for _, t := range jp.Targets {
				if t.Expr == "" {
					return fmt.Errorf("dashboard %s: panel %q: query %s has no expr", d.UID, jp.Title, t.RefID)
				}
				p.Queries = append(p.Queries, PanelQuery{Dashboard: d.UID, Panel: jp.Title, PanelType: jp.Type,
					RefID: t.RefID, Expr: t.Expr, Legend: t.Legend, Instant: t.Instant && !t.Range})
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return Parsed{}, err
	}
	for _, v := range d.Templating.List {
		nv := Variable{Name: v.Name, Type: v.Type, Multi: v.Multi, AllValue: v.AllValue}
		if len(v.Query) > 0 {
			// A string, or Grafana's {"query": "...", "refId": ...} form.
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				var m struct {
					Query string `json:"query"`
				}
				if err := json.Unmarshal(v.Query, &m); err != nil {
					return Parsed{}, fmt.Errorf("dashboard %s: variable %s: query is neither a string nor an object: %s", d.UID, v.Name, v.Query)
				}
				s = m.Query
			}
			nv.Query = s
		}
		p.Variables = append(p.Variables, nv)
	}
	return p, nil
}
