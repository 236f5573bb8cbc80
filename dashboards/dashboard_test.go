package dashboards

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/modelsplit/modelsplit/metrics"
)

type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int             `json:"id"`
		Type       string          `json:"type"`
		Title      string          `json:"title"`
		Datasource json.RawMessage `json:"datasource"`
		GridPos    struct{ H, W, X, Y int }
		Targets    []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// registered returns every modelsplit series name and its label names,
// from the collectors' descriptions (a vector with no children yet is
// still described).
func registered(t *testing.T) map[string][]string {
	m := metrics.New()
	out := map[string][]string{}
	nameRE := regexp.MustCompile(`fqName: "([^"]+)"`)
	labelsRE := regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		ch := make(chan *prometheus.Desc, 8)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			s := d.String()
			n := nameRE.FindStringSubmatch(s)
			if n == nil {
				t.Fatalf("cannot read a metric name from %s", s)
			}
			var labels []string
			if l := labelsRE.FindStringSubmatch(s); l != nil && l[1] != "" {
				for _, x := range strings.Split(l[1], ",") {
					labels = append(labels, strings.TrimSpace(x))
				}
			}
			out[n[1]] = labels
		}
	}
	if len(out) < 20 {
		t.Fatalf("only %d metrics described: %v", len(out), out)
	}
	return out
}

func load(t *testing.T) dashboard {
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

var (
	metricRE = regexp.MustCompile(`modelsplit_[a-z0-9_]+`)
	// selectorRE finds metric{labels} and by (labels) clauses.
	selectorRE = regexp.MustCompile(`(modelsplit_[a-z0-9_]+)\{([^}]*)\}`)
	labelRE    = regexp.MustCompile(`([a-z_]+)\s*(=~|!=|!~|=)`)
)

func baseName(n string, known map[string][]string) string {
	if _, ok := known[n]; ok {
		return n
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(n, suf); ok {
			if _, ok := known[b]; ok {
				return b
			}
		}
	}
	return n
}

func TestDashboardShape(t *testing.T) {
	d := load(t)
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("title %q uid %q panels %d", d.Title, d.UID, len(d.Panels))
	}
	ids := map[int]bool{}
	type cell struct{ x, y int }
	used := map[cell]string{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if prev, ok := used[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at %d,%d", prev, p.Title, x, y)
				}
				used[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Datasource) == 0 || len(p.Targets) == 0 {
			t.Errorf("panel %q has no datasource or targets", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
		}
	}
}

func TestDashboardMatchesMetrics(t *testing.T) {
	known := registered(t)
	d := load(t)
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			exprs = append(exprs, v.Query)
		}
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricRE.FindAllString(e, -1) {
			b := baseName(n, known)
			if _, ok := known[b]; !ok {
				t.Errorf("query uses %s, which modelsplit does not export: %s", n, e)
				continue
			}
			seen[b] = true
		}
		for _, m := range selectorRE.FindAllStringSubmatch(e, -1) {
			b := baseName(m[1], known)
			for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
				if l[1] == "le" && strings.HasSuffix(m[1], "_bucket") {
					continue
				}
				if !contains(known[b], l[1]) {
					t.Errorf("query selects label %q on %s, which has labels %v", l[1], b, known[b])
				}
			}
		}
		// Labels grouped by must exist on at least one metric of the query.
		for _, by := range regexp.MustCompile(`by \(([^)]*)\)`).FindAllStringSubmatch(e, -1) {
			for _, l := range strings.Split(by[1], ",") {
				l = strings.TrimSpace(l)
				ok := l == "le"
				for _, n := range metricRE.FindAllString(e, -1) {
					ok = ok || contains(known[baseName(n, known)], l)
				}
				if !ok {
					t.Errorf("query groups by %q, a label none of its metrics has: %s", l, e)
				}
			}
		}
	}
	for n := range known {
		if strings.HasPrefix(n, "modelsplit_") && !seen[n] {
			t.Errorf("%s is exported but no panel shows it", n)
		}
	}
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}
