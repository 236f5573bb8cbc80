package live

import (
	"maps"
	"strings"
	"testing"
)

var fileFace = map[string]int{"stable": 90, "canary": 10}

// Live weights are served instead of the file's, and stay in force when
// the file is reloaded with other settings changed.
func TestLiveWeightsWinOverTheFile(t *testing.T) {
	w := newWorld(t)
	w.must("face", SetWeights(map[string]int{"stable": 50, "canary": 50}))
	if got := w.weights("face"); got["canary"] != 50 {
		t.Fatalf("served %v, want the live 50/50 over the file's 90/10", got)
	}
	// An unrelated edit (a shadow's percent) keeps the override.
	if details := w.reload(parse(t, "percent: 10, backends: [\"10.0.0.3:80\"]", "percent: 20, backends: [\"10.0.0.3:80\"]")); len(details) != 0 {
		t.Fatalf("an unrelated edit superseded: %v", details)
	}
	if got := w.weights("face"); got["canary"] != 50 {
		t.Fatalf("after an unrelated edit: %v, want the live 50/50", got)
	}
}

// A file whose weights differ from those the override was made against
// wins; the override is gone and the drop audited.
func TestFileChangeSupersedesLiveWeights(t *testing.T) {
	w := newWorld(t)
	w.must("face", SetWeights(map[string]int{"stable": 50, "canary": 50}))
	details := w.reload(parse(t, "weight: 90", "weight: 80", "weight: 10", "weight: 20"))
	if got := w.weights("face"); got["stable"] != 80 || got["canary"] != 20 {
		t.Fatalf("served %v, want the new file's 80/20", got)
	}
	if len(details) != 1 || !strings.Contains(details[0], "config file changed this endpoint's weights") {
		t.Fatalf("superseded details %q", details)
	}
	if es := w.st.Endpoints["face"]; es != nil && es.Weights != nil {
		t.Fatalf("override kept after the file superseded it: %+v", es)
	}
	last := w.st.Audit[len(w.st.Audit)-1]
	if last.Action != "superseded" || !maps.Equal(last.Before, map[string]int{"stable": 50, "canary": 50}) || last.After["stable"] != 80 {
		t.Fatalf("audit %+v", last)
	}
}

// Stored weights that no longer pass validation (written by an older
// release, or by hand) are not served.
func TestInvalidStoredWeightsAreSuperseded(t *testing.T) {
	file := parse(t)
	st := NewState()
	st.Endpoint("face").Weights = map[string]int{"stable": 0, "canary": 2_000_000}
	st.Endpoint("face").Base = fileFace
	eff, superseded := Effective(file, st, t0)
	e, _ := eff.Endpoint("face")
	if got := WeightsOf(e); !maps.Equal(got, fileFace) {
		t.Fatalf("served %v, want the file's", got)
	}
	if len(superseded) != 1 || !strings.Contains(superseded[0].Detail, "not valid") || !strings.Contains(superseded[0].Detail, "at most") {
		t.Fatalf("superseded %+v, want one naming the problem", superseded)
	}
	if _, ok := st.Endpoints["face"]; ok {
		t.Fatal("the invalid override is still in the state")
	}
}

func TestSupersededWhenTheEndpointIsRemoved(t *testing.T) {
	w := newWorld(t)
	w.must("chat", SetWeights(map[string]int{"a": 50, "b": 50}))
	cut := testConfig[:strings.Index(testConfig, "  - name: chat")]
	details := w.reload(parse(t, testConfig, cut))
	if len(details) != 1 || !strings.Contains(details[0], "no longer in the config file") {
		t.Fatalf("superseded %q", details)
	}
	if _, ok := w.st.Endpoints["chat"]; ok {
		t.Fatal("a removed endpoint's live state is kept")
	}
}

func TestSupersededWhenTheShadowIsRemoved(t *testing.T) {
	w := newWorld(t)
	w.must("face", SetShadowPaused("mirror", true))
	details := w.reload(parse(t, `      - {name: mirror, percent: 10, backends: ["10.0.0.3:80"]}`+"\n", ""))
	if len(details) != 1 || details[0] != "the shadow is no longer in the config file" {
		t.Fatalf("superseded %q", details)
	}
	if es := w.st.Endpoints["face"]; es != nil && len(es.Shadows) != 0 {
		t.Fatalf("the removed shadow's override is kept: %+v", es.Shadows)
	}
}

// A pause or resume made against the file's paused setting gives way
// when the file changes that setting, and only then.
func TestSupersededWhenTheShadowsPausedSettingChanges(t *testing.T) {
	w := newWorld(t)
	w.must("face", SetShadowPaused("parked", false)) // resume, against a paused file
	if w.endpoint("face").Shadows[1].Paused {
		t.Fatal("resume not served")
	}
	// The file now says what the override said: the file's setting, which
	// is the same, is in force and the override goes.
	details := w.reload(parse(t, "paused: true", "paused: false"))
	if len(details) != 1 || !strings.Contains(details[0], "changed this shadow's paused setting") {
		t.Fatalf("superseded %q", details)
	}
	w.must("face", SetShadowPaused("parked", true)) // pause, against a running file
	if details := w.reload(parse(t, "paused: true", "paused: false", "10.0.0.4:80", "10.0.0.7:80")); len(details) != 0 {
		t.Fatalf("an edit that kept the paused setting superseded: %q", details)
	}
	if !w.endpoint("face").Shadows[1].Paused {
		t.Fatal("the pause is not served after an unrelated edit")
	}
}
