package dashboards

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/modelsplit/modelsplit/metrics"
	"github.com/modelsplit/modelsplit/stats"
)

// dashboard is the part of Grafana's dashboard model the tests read.
type dashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Datasource *datasource     `json:"datasource"`
	RawQuery   json.RawMessage `json:"query"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

// query returns the variable's query, which Grafana stores either as a
// string or as an object with a "query" field.
func (v variable) query() string {
	var s string
	if json.Unmarshal(v.RawQuery, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.RawQuery, &o)
	return o.Query
}

type panel struct {
	ID          int         `json:"id"`
	Type        string      `json:"type"`
	Title       string      `json:"title"`
	Datasource  *datasource `json:"datasource"`
	GridPos     gridPos     `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"` // a collapsed row's panels
}

type gridPos struct{ H, W, X, Y int }

type target struct {
	RefID        string      `json:"refId"`
	Datasource   *datasource `json:"datasource"`
	Expr         string      `json:"expr"`
	LegendFormat string      `json:"legendFormat"`
}

// kind is a collector's metric type, read from the Go type of its field.
type kind string

const (
	counter   kind = "counter"
	gauge     kind = "gauge"
	histogram kind = "histogram"
)

// family is one registered metric family.
type family struct {
	kind   kind
	labels []string
}

// registered returns every metric family the fields of *metrics.Metrics
// describe, with its type and label names.
//
// Why this way: Registry.Gather() only reports a vector once one of its
// children exists, and touching children would need each vector's label
// names, which is what we want to learn. Describe reports every family with
// its variable labels whether or not a child exists, and reflecting over the
// struct covers a field added to Metrics without editing this test. Two
// cross-checks tie the fields to what /metrics really serves:
//   - each field's collector is registered in m.Registry (registering it again
//     must fail with AlreadyRegisteredError), so a field that New() forgets
//     to register cannot be put on a panel;
//   - every modelsplit_ family m.Registry gathers comes from a field. Plain
//     counters, gauges and histograms are gathered even at zero, so a series
//     registered without a field is caught (a vector without a field and
//     without children is invisible to any registry API; Metrics keeps all
//     series in fields by design).
func registered(t *testing.T) map[string]family {
	t.Helper()
	m := metrics.New()
	out := map[string]family{}
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		fv := v.Field(i)
		if !f.IsExported() {
			continue
		}
		switch fv.Kind() {
		case reflect.Pointer, reflect.Interface:
			if fv.IsNil() {
				t.Fatalf("Metrics.%s is nil after metrics.New()", f.Name)
			}
		default:
			continue // not a collector
		}
		c, ok := fv.Interface().(prometheus.Collector)
		if _, isRegistry := c.(*prometheus.Registry); !ok || isRegistry {
			// The registry is a Collector too (of everything, Go and
			// process metrics included); registering it in itself deadlocks.
			continue
		}
		var already prometheus.AlreadyRegisteredError
		if err := m.Registry.Register(c); !errors.As(err, &already) {
			t.Fatalf("Metrics.%s is not registered in metrics.New().Registry (Register: %v); /metrics would not serve it", f.Name, err)
		}
		var k kind
		// Order matters: a Gauge also has Inc and Add, so it satisfies
		// prometheus.Counter.
		switch c.(type) {
		case prometheus.Gauge, *prometheus.GaugeVec:
			k = gauge
		case prometheus.Counter, *prometheus.CounterVec:
			k = counter
		case prometheus.Histogram, *prometheus.HistogramVec:
			k = histogram
		default:
			t.Fatalf("Metrics.%s is a %T; teach this test its metric type", f.Name, c)
		}
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			name, labels, err := parseDesc(d.String())
			if err != nil {
				t.Fatalf("Metrics.%s: %v", f.Name, err)
			}
			if _, dup := out[name]; dup {
				t.Fatalf("Metrics.%s describes %s, already described by another field", f.Name, name)
			}
			out[name] = family{kind: k, labels: labels}
		}
	}
	statsFamilies(t, m, out)
	if len(out) < 25 {
		t.Fatalf("only %d metric families described: %v", len(out), out)
	}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if n := mf.GetName(); strings.HasPrefix(n, "modelsplit_") {
			if _, ok := out[n]; !ok {
				t.Fatalf("%s is registered but no field of metrics.Metrics holds it; this test cannot see its labels", n)
			}
		}
	}
	return out
}

// statsFamilies adds the families m.Stats exports (the observe series:
// requests, responses, latency), after checking m.Registry serves them.
// Its collector makes series from its totals, so a series exists only
// once something was recorded: the types and labels are read from what
// a recorder with one request gathers.
func statsFamilies(t *testing.T, m *metrics.Metrics, out map[string]family) {
	t.Helper()
	var already prometheus.AlreadyRegisteredError
	if err := m.Registry.Register(m.Stats.Collector()); !errors.As(err, &already) {
		t.Fatalf("Metrics.Stats's collector is not registered in metrics.New().Registry (Register: %v)", err)
	}
	r := stats.New(stats.Options{})
	r.Variant("e", "v").Request(stats.Class2xx, time.Millisecond)
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.Collector())
	mfs, err := reg.Gather()
	if err != nil || len(mfs) == 0 {
		t.Fatalf("gather stats: %d families, %v", len(mfs), err)
	}
	kinds := map[dto.MetricType]kind{dto.MetricType_COUNTER: counter, dto.MetricType_GAUGE: gauge, dto.MetricType_HISTOGRAM: histogram}
	for _, mf := range mfs {
		k, ok := kinds[mf.GetType()]
		if !ok {
			t.Fatalf("%s is a %v; teach this test its metric type", mf.GetName(), mf.GetType())
		}
		if _, dup := out[mf.GetName()]; dup {
			t.Fatalf("Metrics.Stats exports %s, already described by a field", mf.GetName())
		}
		var labels []string
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, l.GetName())
		}
		out[mf.GetName()] = family{kind: k, labels: labels}
	}
}

// descRE matches client_golang's Desc.String() (v1.25):
//
//	Desc{fqName: "x", help: "...", unit: "", constLabels: {a="b"}, variableLabels: {c,d}}
//
// Help and unit are %q-quoted, so a quoted-string pattern skips them whatever
// they contain. A label with a constraint prints as c(name).
var (
	descRE       = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: "(?:[^"\\]|\\.)*", unit: "(?:[^"\\]|\\.)*", constLabels: \{(.*)\}, variableLabels: \{([^{}]*)\}\}$`)
	constLabelRE = regexp.MustCompile(`(?:^|,)([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
)

func parseDesc(s string) (name string, labels []string, err error) {
	m := descRE.FindStringSubmatch(s)
	if m == nil {
		return "", nil, fmt.Errorf("unexpected Desc format (client_golang changed?): %s", s)
	}
	if err := json.Unmarshal([]byte(m[1]), &name); err != nil || name == "" {
		return "", nil, fmt.Errorf("cannot read fqName from %s", s)
	}
	for _, c := range constLabelRE.FindAllStringSubmatch(m[2], -1) {
		labels = append(labels, c[1])
	}
	if m[3] != "" {
		for _, l := range strings.Split(m[3], ",") {
			l = strings.TrimSpace(l)
			if x, ok := strings.CutPrefix(l, "c("); ok {
				l = strings.TrimSuffix(x, ")")
			}
			labels = append(labels, l)
		}
	}
	return name, labels, nil
}

func TestParseDesc(t *testing.T) {
	d := prometheus.NewDesc("modelsplit_x", `help with "quotes", {braces} and variableLabels: {y}`,
		[]string{"endpoint", "variant"}, prometheus.Labels{"zone": "a,b=\"c\""})
	name, labels, err := parseDesc(d.String())
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(labels)
	if name != "modelsplit_x" || !slices.Equal(labels, []string{"endpoint", "variant", "zone"}) {
		t.Fatalf("parseDesc(%s) = %q %v", d, name, labels)
	}
}

func load(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("modelsplit.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("modelsplit.json: %v", err)
	}
	return d
}

// allPanels flattens rows, so panels inside a collapsed row are checked too.
func allPanels(d dashboard) []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

const dsUID = "${datasource}"

func TestDashboardShape(t *testing.T) {
	d := load(t)
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("title %q uid %q panels %d", d.Title, d.UID, len(d.Panels))
	}
	if d.SchemaVersion != 39 {
		t.Errorf("schemaVersion %d, want 39", d.SchemaVersion)
	}
	var rows []string
	ids := map[int]string{}
	type cell struct{ x, y int }
	used := map[cell]string{}
	for i, p := range allPanels(d) {
		if prev, ok := ids[p.ID]; ok || p.ID <= 0 {
			t.Errorf("panel %q: id %d missing or already used by %q", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.Title == "" {
			t.Errorf("panel id %d has no title", p.ID)
		}
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		overlaps := map[string]bool{} // report each pair once
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if prev, ok := used[cell{x, y}]; ok && !overlaps[prev] {
					overlaps[prev] = true
					t.Errorf("panels %q and %q overlap (first at x=%d y=%d)", prev, p.Title, x, y)
				}
				used[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			rows = append(rows, p.Title)
			if g.X != 0 || g.W != 24 || g.H != 1 {
				t.Errorf("row %q: gridPos %+v, want a full-width row of height 1", p.Title, g)
			}
			continue
		}
		if i == 0 {
			t.Errorf("panel %q comes before the first row", p.Title)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != dsUID {
			t.Errorf("panel %q: datasource %+v, want prometheus %s", p.Title, p.Datasource, dsUID)
		}
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("panel %q has no unit", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %q has an empty expr", p.Title, tg.RefID)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != dsUID {
				t.Errorf("panel %q target %q: datasource %+v, want %s", p.Title, tg.RefID, tg.Datasource, dsUID)
			}
		}
	}
	// Grafana assigns panels to the row above them in array order, so the
	// array must follow the layout.
	sorted := slices.IsSortedFunc(d.Panels, func(a, b panel) int {
		if a.GridPos.Y != b.GridPos.Y {
			return a.GridPos.Y - b.GridPos.Y
		}
		return a.GridPos.X - b.GridPos.X
	})
	if !sorted {
		t.Errorf("panels are not listed in layout order (y, then x)")
	}
	want := []string{"Traffic", "Quality", "Shadows", "Control plane & store", "Rollouts", "Bandits"}
	if !slices.Equal(rows, want) {
		t.Errorf("rows %q, want %q", rows, want)
	}
}

func TestDashboardVariables(t *testing.T) {
	d := load(t)
	want := map[string]struct{ typ, query string }{
		"datasource": {"datasource", "prometheus"},
		"endpoint":   {"query", `label_values(modelsplit_decisions_total, endpoint)`},
		"variant":    {"query", `label_values(modelsplit_decisions_total{endpoint=~"$endpoint"}, variant)`},
		"shadow":     {"query", `label_values(modelsplit_shadow_comparisons_total, shadow)`},
	}
	defined := map[string]bool{}
	for _, v := range d.Templating.List {
		defined[v.Name] = true
		w, ok := want[v.Name]
		if !ok {
			continue
		}
		if v.Type != w.typ || v.query() != w.query {
			t.Errorf("variable %s: type %q query %q, want %q %q", v.Name, v.Type, v.query(), w.typ, w.query)
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != dsUID) {
			t.Errorf("variable %s: datasource %+v, want %s", v.Name, v.Datasource, dsUID)
		}
	}
	for n := range want {
		if !defined[n] {
			t.Errorf("variable %s is missing", n)
		}
	}
	// Every variable a query references exists, and every filter variable
	// filters at least one panel (a variable nothing uses misleads).
	varRE := regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)
	usedByPanel := map[string]bool{}
	check := func(where, e string, panelExpr bool) {
		for _, m := range varRE.FindAllStringSubmatch(e, -1) {
			if strings.HasPrefix(m[1], "__") {
				continue
			}
			if !defined[m[1]] {
				t.Errorf("%s references $%s, which is not a variable: %s", where, m[1], e)
			}
			if panelExpr {
				usedByPanel[m[1]] = true
			}
		}
	}
	for _, p := range allPanels(d) {
		for _, tg := range p.Targets {
			check(fmt.Sprintf("panel %q", p.Title), tg.Expr, true)
		}
	}
	for _, v := range d.Templating.List {
		check("variable "+v.Name, v.query(), false)
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" && !usedByPanel[v.Name] {
			t.Errorf("variable %s filters no panel", v.Name)
		}
	}
}

// TestDashboardImportable checks what Grafana's Import does with the file:
// it asks for a value for each __inputs entry (the data source picker) and
// replaces ${NAME} of those inputs in every string, leaving other ${...}
// alone. The picked data source seeds the datasource variable, which every
// panel uses, so the source stays switchable after import.
func TestDashboardImportable(t *testing.T) {
	d := load(t)
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs %+v, want one prometheus datasource input DS_PROMETHEUS", d.Inputs)
	}
	names := map[string]bool{}
	for _, in := range d.Inputs {
		names[in.Name] = true
	}
	for _, v := range d.Templating.List {
		names[v.Name] = true
		if v.Name == "datasource" && v.Current.Value != "${DS_PROMETHEUS}" {
			t.Errorf("variable datasource: current value %v, want ${DS_PROMETHEUS} so Import seeds it", v.Current.Value)
		}
	}
	// Every ${name} or ${name:format} anywhere in the file resolves: an
	// input, a variable or a Grafana built-in ($__rate_interval, ...).
	b, err := os.ReadFile("modelsplit.json")
	if err != nil {
		t.Fatal(err)
	}
	var strs []string
	var walk func(any)
	walk = func(x any) {
		switch x := x.(type) {
		case string:
			strs = append(strs, x)
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	var raw any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	walk(raw)
	placeholderRE := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}`)
	for _, s := range strs {
		for _, m := range placeholderRE.FindAllStringSubmatch(s, -1) {
			if !names[m[1]] && !strings.HasPrefix(m[1], "__") {
				t.Errorf("%s is neither an import input nor a variable: %q", m[0], s)
			}
		}
	}
}

// ---- PromQL checks. The dashboard's queries are simple (selectors, rate,
// aggregations, histogram_quantile, binary operators), so a scanner that
// understands parentheses is enough; it does not need a PromQL parser.

var (
	metricRE   = regexp.MustCompile(`\bmodelsplit_[a-z0-9_]+`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	groupingRE = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)`)
	callRE     = regexp.MustCompile(`\b(rate|irate|increase|histogram_quantile)\s*\(`)
	rangeRE    = regexp.MustCompile(`\[[^\]]*\]`)
	legendRE   = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	stringRE   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
)

// blankStrings replaces the inside of string literals with spaces, keeping
// offsets, so label values are never read as metric or label names.
func blankStrings(e string) string {
	return stringRE.ReplaceAllStringFunc(e, func(s string) string {
		return `"` + strings.Repeat(" ", len(s)-2) + `"`
	})
}

// matching returns the index of the parenthesis matching the one at open
// (open may be a '(' or a ')'), or -1.
func matching(e string, open int) int {
	step, inc, dec := 1, byte('('), byte(')')
	if e[open] == ')' {
		step, inc, dec = -1, ')', '('
	}
	depth := 0
	for i := open; i >= 0 && i < len(e); i += step {
		switch e[i] {
		case inc:
			depth++
		case dec:
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

type span struct{ from, to int }

func (s span) has(i int) bool { return i > s.from && i < s.to }

// series resolves a name used in a query to its family: histograms are
// exposed only as _bucket, _sum and _count.
func series(n string, known map[string]family) (base, suffix string, ok bool) {
	if f, ok := known[n]; ok && f.kind != histogram {
		return n, "", true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if b, found := strings.CutSuffix(n, suf); found {
			if f, ok := known[b]; ok && f.kind == histogram {
				return b, suf, true
			}
		}
	}
	return n, "", false
}

func seriesLabels(n string, known map[string]family) []string {
	b, suf, ok := series(n, known)
	if !ok {
		return nil
	}
	l := known[b].labels
	if suf == "_bucket" {
		l = append(slices.Clip(l), "le")
	}
	return l
}

// exprInfo is what checkExpr learned about one query.
type exprInfo struct {
	families []string // families used
	grouped  []string // labels in by (...) clauses
	allRated bool     // every series is a rated counter (a per-second panel)
	ratio    bool     // a division
	quantile []string // series under histogram_quantile
}

// checkExpr checks one query against the registered families and returns
// what it found plus a list of problems.
func checkExpr(raw string, known map[string]family) (info exprInfo, problems []string) {
	e := blankStrings(raw)
	bad := func(f string, a ...any) { problems = append(problems, fmt.Sprintf(f, a...)) }

	for _, r := range rangeRE.FindAllString(e, -1) {
		if r != "[$__rate_interval]" {
			bad("range %s: use [$__rate_interval]", r)
		}
	}
	var rated, quantiles []span
	for _, m := range callRE.FindAllStringSubmatchIndex(e, -1) {
		open := m[1] - 1
		end := matching(e, open)
		if end < 0 {
			bad("unbalanced parentheses after %s", e[m[2]:m[3]])
			return info, problems
		}
		if e[m[2]:m[3]] == "histogram_quantile" {
			quantiles = append(quantiles, span{open, end})
		} else {
			rated = append(rated, span{open, end})
		}
	}
	in := func(spans []span, i int) bool {
		return slices.ContainsFunc(spans, func(s span) bool { return s.has(i) })
	}

	info.allRated = true
	info.ratio = strings.Contains(e, " / ")
	type use struct {
		name string
		at   int
	}
	var uses []use
	for _, loc := range metricRE.FindAllStringIndex(e, -1) {
		n := e[loc[0]:loc[1]]
		uses = append(uses, use{n, loc[0]})
		b, suf, ok := series(n, known)
		if !ok {
			if f, isHist := known[n]; isHist && f.kind == histogram {
				bad("%s is a histogram: query %s_bucket, _sum or _count", n, n)
			} else {
				bad("%s is not a metric modelsplit exports", n)
			}
			continue
		}
		info.families = append(info.families, b)
		f := known[b]
		r := in(rated, loc[0])
		switch {
		case f.kind == gauge && r:
			bad("%s is a gauge; rate() of a gauge is meaningless", n)
		case f.kind != gauge && !r:
			bad("%s is a %s; wrap it in rate(...[$__rate_interval])", n, f.kind)
		}
		if suf == "_bucket" && !in(quantiles, loc[0]) {
			bad("%s outside histogram_quantile", n)
		}
		if suf == "_bucket" {
			info.quantile = append(info.quantile, n)
		}
		if f.kind != counter {
			info.allRated = false
		}
		// Label matchers of this selector.
		rest := e[loc[1]:]
		if t := strings.TrimLeft(rest, " "); strings.HasPrefix(t, "{") {
			start := len(rest) - len(t)
			end := strings.IndexByte(rest[start:], '}')
			if end < 0 {
				bad("unterminated selector after %s", n)
				continue
			}
			for _, mm := range matcherRE.FindAllStringSubmatch(rest[start:start+end], -1) {
				if !slices.Contains(seriesLabels(n, known), mm[1]) {
					bad("%s has no label %q (labels: %v)", n, mm[1], seriesLabels(n, known))
				}
			}
		}
	}
	if len(uses) == 0 {
		bad("no modelsplit_ metric in the query")
	}

	for _, m := range groupingRE.FindAllStringSubmatchIndex(e, -1) {
		kw := e[m[2]:m[3]]
		var labels []string
		for _, l := range strings.Split(e[m[4]:m[5]], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
		switch kw {
		case "by", "without":
			// The aggregated expression: "sum by (x) (expr)" or "sum (expr) by (x)".
			var arg span
			if after := strings.TrimLeft(e[m[1]:], " "); strings.HasPrefix(after, "(") {
				open := m[1] + len(e[m[1]:]) - len(after)
				arg = span{open, matching(e, open)}
			} else if before := strings.TrimRight(e[:m[0]], " "); strings.HasSuffix(before, ")") {
				close := len(before) - 1
				arg = span{matching(e, close), close}
			} else {
				bad("cannot find what %s (%s) aggregates", kw, e[m[4]:m[5]])
				continue
			}
			for _, u := range uses {
				if _, _, known := series(u.name, known); !known || !arg.has(u.at) {
					continue // unknown names are reported above
				}
				for _, l := range labels {
					if !slices.Contains(seriesLabels(u.name, known), l) {
						bad("%s (%s): %s has no label %q (labels: %v)", kw, e[m[4]:m[5]], u.name, l, seriesLabels(u.name, known))
					}
				}
			}
			if kw == "by" {
				info.grouped = append(info.grouped, labels...)
			}
		default:
			// on/ignoring/group_*: the label must exist on a series of the query.
			for _, l := range labels {
				if !slices.ContainsFunc(uses, func(u use) bool { return slices.Contains(seriesLabels(u.name, known), l) }) {
					bad("%s (%s): no series of the query has label %q", kw, e[m[4]:m[5]], l)
				}
			}
		}
	}
	return info, problems
}

// checkLegend checks that {{label}} in a legend can be filled: the label is
// on a series of the query and, when the query aggregates, kept by a by clause.
func checkLegend(legend string, info exprInfo, known map[string]family) (problems []string) {
	for _, m := range legendRE.FindAllStringSubmatch(legend, -1) {
		l := m[1]
		onSeries := slices.ContainsFunc(info.families, func(f string) bool { return slices.Contains(known[f].labels, l) })
		if !onSeries || (len(info.grouped) > 0 && !slices.Contains(info.grouped, l)) {
			problems = append(problems, fmt.Sprintf("legend {{%s}} is not a label of the query's result", l))
		}
	}
	return problems
}

var perSecond = []string{"reqps", "ops", "rps", "wps", "cps"}

func TestDashboardMatchesMetrics(t *testing.T) {
	known := registered(t)
	d := load(t)
	seen := map[string]bool{}
	for _, p := range allPanels(d) {
		unit := p.FieldConfig.Defaults.Unit
		for _, tg := range p.Targets {
			info, problems := checkExpr(tg.Expr, known)
			problems = append(problems, checkLegend(tg.LegendFormat, info, known)...)
			for _, f := range info.families {
				seen[f] = true
			}
			switch {
			case p.Type != "timeseries":
			case len(info.quantile) > 0 && strings.HasSuffix(info.quantile[0], "_seconds_bucket"):
				if unit != "s" {
					problems = append(problems, fmt.Sprintf("quantiles of %s want unit s, panel has %q", info.quantile[0], unit))
				}
			case info.ratio:
				if unit != "percentunit" {
					problems = append(problems, fmt.Sprintf("a ratio wants unit percentunit, panel has %q", unit))
				}
			case info.allRated:
				if !slices.Contains(perSecond, unit) {
					problems = append(problems, fmt.Sprintf("a rate wants a per-second unit %v, panel has %q", perSecond, unit))
				}
			case slices.ContainsFunc(info.families, func(f string) bool { return strings.Contains(f, "bytes") }):
				if unit != "bytes" {
					problems = append(problems, fmt.Sprintf("a byte count wants unit bytes, panel has %q", unit))
				}
			}
			for _, pr := range problems {
				t.Errorf("panel %q target %s: %s\n\texpr: %s", p.Title, tg.RefID, pr, tg.Expr)
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		names := metricRE.FindAllString(v.query(), -1)
		if len(names) == 0 {
			t.Errorf("variable %s queries no modelsplit_ metric: %s", v.Name, v.query())
		}
		for _, n := range names {
			if _, _, ok := series(n, known); !ok {
				t.Errorf("variable %s queries %s, which modelsplit does not export", v.Name, n)
			}
		}
	}
	// Reverse coverage: a new metric needs a panel.
	var missing []string
	for n := range known {
		if strings.HasPrefix(n, "modelsplit_") && !seen[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	for _, n := range missing {
		t.Errorf("%s is exported but no panel shows it", n)
	}
}

// TestCheckerCatches keeps the checks above honest: each query here is
// wrong in one way and must be reported.
func TestCheckerCatches(t *testing.T) {
	known := registered(t)
	good := `sum by (endpoint, variant) (rate(modelsplit_variant_requests_total{endpoint=~"$endpoint"}[$__rate_interval]))`
	if _, p := checkExpr(good, known); len(p) > 0 {
		t.Fatalf("good query reported: %v", p)
	}
	for _, bad := range []string{
		`sum by (endpoint) (rate(modelsplit_variant_request_total[$__rate_interval]))`,                                                                                    // misspelled
		`sum by (pod) (rate(modelsplit_variant_requests_total[$__rate_interval]))`,                                                                                        // by label absent
		`sum(rate(modelsplit_variant_requests_total[$__rate_interval])) by (shadow)`,                                                                                      // trailing by
		`rate(modelsplit_variant_requests_total{shadow="a"}[$__rate_interval])`,                                                                                           // selector label absent
		`rate(modelsplit_variant_requests_total[5m])`,                                                                                                                     // fixed range
		`modelsplit_variant_requests_total`,                                                                                                                               // raw counter
		`rate(modelsplit_variant_weight[$__rate_interval])`,                                                                                                               // rated gauge
		`histogram_quantile(0.9, rate(modelsplit_variant_latency_seconds[$__rate_interval]))`,                                                                             // histogram base name
		`histogram_quantile(0.9, sum by (le) (rate(modelsplit_decisions_total[$__rate_interval])))`,                                                                       // le on a counter
		`rate(modelsplit_variant_latency_seconds_bucket{le="1"}[$__rate_interval])`,                                                                                       // bucket outside quantile
		`sum by (endpoint) (rate(modelsplit_variant_requests_total[$__rate_interval])) / on(kind) sum by (endpoint) (rate(modelsplit_decisions_total[$__rate_interval]))`, // on label absent
	} {
		if _, p := checkExpr(bad, known); len(p) == 0 {
			t.Errorf("not reported: %s", bad)
		}
	}
	info, _ := checkExpr(good, known)
	if p := checkLegend("{{endpoint}}/{{source}}", info, known); len(p) == 0 {
		t.Errorf("legend with a label the query drops not reported")
	}
}
