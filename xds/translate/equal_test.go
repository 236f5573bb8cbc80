package translate

import (
	"math"
	"reflect"
	"testing"
	"unsafe"

	"github.com/modelsplit/modelsplit/config"
)

// TestSameEndpointIsDeepEqual: the compiled comparison agrees with
// reflect.DeepEqual on a fully populated endpoint, its deep copy, and the
// copy with any one field (at any depth) changed, set to nil or emptied.
func TestSameEndpointIsDeepEqual(t *testing.T) {
	var base config.Endpoint
	fill(reflect.ValueOf(&base).Elem(), 1)
	check := func(what string, a, b *config.Endpoint) {
		t.Helper()
		if got, want := sameEndpoint(a, b), reflect.DeepEqual(a, b); got != want {
			t.Errorf("%s: sameEndpoint = %v, reflect.DeepEqual = %v", what, got, want)
		}
	}
	same := deepCopy(reflect.ValueOf(base)).Interface().(config.Endpoint)
	check("deep copy", &base, &same)
	if !sameEndpoint(&base, &same) {
		t.Fatal("a deep copy differs")
	}
	check("itself", &base, &base)

	differing := 0
	for _, path := range leafPaths(reflect.TypeFor[config.Endpoint](), nil) {
		for _, edit := range []string{"change", "zero"} {
			c := deepCopy(reflect.ValueOf(base)).Interface().(config.Endpoint)
			v := at(reflect.ValueOf(&c).Elem(), path)
			if edit == "change" {
				change(v)
			} else {
				v.SetZero()
			}
			check(edit+" "+pathString(path), &base, &c)
			if !reflect.DeepEqual(&base, &c) {
				differing++
			}
		}
	}
	if differing < 100 {
		t.Fatalf("only %d edits of config.Endpoint made a difference", differing)
	}

	// nil and empty slices differ for DeepEqual, and so here.
	a, b := deepCopy(reflect.ValueOf(base)).Interface().(config.Endpoint), deepCopy(reflect.ValueOf(base)).Interface().(config.Endpoint)
	a.Services, b.Services = nil, []string{}
	check("nil vs empty slice", &a, &b)
	// NaN is not equal to itself; -0 equals 0.
	a, b = deepCopy(reflect.ValueOf(base)).Interface().(config.Endpoint), deepCopy(reflect.ValueOf(base)).Interface().(config.Endpoint)
	a.Shadows[0].Percent, b.Shadows[0].Percent = math.NaN(), math.NaN()
	check("NaN weights", &a, &b)
	a.Shadows[0].Percent, b.Shadows[0].Percent = 0, math.Copysign(0, -1)
	check("-0 and 0", &a, &b)
}

// fill gives every field below v a non-zero value derived from seed;
// slices get two elements, maps one entry, pointers a value.
func fill(v reflect.Value, seed int) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(seed%2 == 1)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(seed + 1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(seed + 1))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(seed) + 0.5)
	case reflect.String:
		v.SetString("s" + string(rune('a'+seed)))
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(v.Field(i), seed)
		}
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), seed)
		v.Set(p)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := 0; i < 2; i++ {
			fill(s.Index(i), seed+i)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, seed)
		fill(e, seed)
		m.SetMapIndex(k, e)
		v.Set(m)
	}
}

// change makes v differ from what it holds.
func change(v reflect.Value) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(v.Int() + 100)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 100)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(v.Float() + 100)
	case reflect.String:
		v.SetString(v.String() + "x")
	default:
		fill(v, 7)
	}
}

func deepCopy(v reflect.Value) reflect.Value {
	out := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			out.Field(i).Set(deepCopy(v.Field(i)))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			p := reflect.New(v.Type().Elem())
			p.Elem().Set(deepCopy(v.Elem()))
			out.Set(p)
		}
	case reflect.Slice:
		if !v.IsNil() {
			s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
			for i := 0; i < v.Len(); i++ {
				s.Index(i).Set(deepCopy(v.Index(i)))
			}
			out.Set(s)
		}
	case reflect.Map:
		if !v.IsNil() {
			m := reflect.MakeMap(v.Type())
			for _, k := range v.MapKeys() {
				m.SetMapIndex(k, deepCopy(v.MapIndex(k)))
			}
			out.Set(m)
		}
	default:
		out.Set(v)
	}
	return out
}

// step is one move from a value to a part of it: a field, or element 1 of
// a slice, or the pointed-to value.
type step struct {
	field int // -1: slice element 1 or pointer target
	name  string
}

// leafPaths lists every field of t that is not a struct, pointer or
// slice, reached through each slice's second element, and the pointers,
// slices and maps themselves.
func leafPaths(t reflect.Type, prefix []step) [][]step {
	var out [][]step
	switch t.Kind() {
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			p := append(append([]step(nil), prefix...), step{i, t.Field(i).Name})
			out = append(out, leafPaths(t.Field(i).Type, p)...)
		}
		return out
	case reflect.Pointer, reflect.Slice:
		out = append(out, prefix)
		p := append(append([]step(nil), prefix...), step{-1, "*"})
		return append(out, leafPaths(t.Elem(), p)...)
	}
	return [][]step{prefix}
}

func at(v reflect.Value, path []step) reflect.Value {
	for _, s := range path {
		switch {
		case s.field >= 0:
			v = v.Field(s.field)
		case v.Kind() == reflect.Pointer:
			v = v.Elem()
		default:
			v = v.Index(1)
		}
	}
	return v
}

func pathString(path []step) string {
	s := ""
	for _, p := range path {
		s += "." + p.name
	}
	return s
}

// BenchmarkStaleEndpoints is the comparison an Update makes of 1,000
// unchanged endpoints with the copies kept.
func BenchmarkStaleEndpoints(b *testing.B) {
	cfg := benchConfig(b, 1000, false)
	tr := NewTranslator()
	if _, _, err := tr.Update(cfg); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if s, _ := tr.staleEndpoints(cfg.Endpoints, false); len(s) != 0 {
			b.Fatalf("%d stale", len(s))
		}
	}
}

// BenchmarkSameEndpoint compares 1,000 endpoints with their kept copies,
// on one goroutine: compiled, and by reflect.DeepEqual.
func BenchmarkSameEndpoint(b *testing.B) {
	cfg := benchConfig(b, 1000, false)
	kept := cfg.Clone()
	for _, tc := range []struct {
		name string
		eq   func(a, b *config.Endpoint) bool
	}{
		{"compiled", sameEndpoint},
		{"reflect", func(a, b *config.Endpoint) bool { return reflect.DeepEqual(a, b) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for i := range cfg.Endpoints {
					if !tc.eq(&kept.Endpoints[i], &cfg.Endpoints[i]) {
						b.Fatal("differs")
					}
				}
			}
		})
	}
}

// equalFor agrees with reflect.DeepEqual kind by kind, including the kinds
// config.Endpoint does not use today (integers of 1, 2 and 4 bytes, float32,
// complex numbers, arrays): a field of one of them may come.
func TestEqualForEveryKind(t *testing.T) {
	type kinds struct {
		I8   int8
		U16  uint16
		I32  int32
		F32  float32
		F64  float64
		C64  complex64
		C128 complex128
		Arr  [3]uint16
		P    *int16
		S    []int32
		M    map[string]int
	}
	eq := equalFor(reflect.TypeFor[kinds]())
	one, two := int16(1), int16(2)
	base := func() kinds {
		return kinds{I8: -3, U16: 500, I32: 70000, F32: 1.5, F64: 2.5, C64: 1 + 2i, C128: 3 + 4i, Arr: [3]uint16{1, 2, 3},
			P: &one, S: []int32{1, 2}, M: map[string]int{"a": 1}}
	}
	changes := map[string]func(*kinds){
		"same":            func(*kinds) {},
		"I8":              func(k *kinds) { k.I8 = 4 },
		"U16":             func(k *kinds) { k.U16 = 501 },
		"I32":             func(k *kinds) { k.I32 = -70000 },
		"F32":             func(k *kinds) { k.F32 = 1.25 },
		"F32 NaN":         func(k *kinds) { k.F32 = float32(math.NaN()) },
		"F64":             func(k *kinds) { k.F64 = -2.5 },
		"C64":             func(k *kinds) { k.C64 = 1 - 2i },
		"C128":            func(k *kinds) { k.C128 = 3 - 4i },
		"Arr":             func(k *kinds) { k.Arr[2] = 4 },
		"P other value":   func(k *kinds) { k.P = &two },
		"P same value":    func(k *kinds) { v := one; k.P = &v },
		"P nil":           func(k *kinds) { k.P = nil },
		"S":               func(k *kinds) { k.S = []int32{1, 3} },
		"S nil vs empty":  func(k *kinds) { k.S = nil },
		"S shorter":       func(k *kinds) { k.S = k.S[:1] },
		"M":               func(k *kinds) { k.M = map[string]int{"a": 2} },
		"M same contents": func(k *kinds) { k.M = map[string]int{"a": 1} },
	}
	for name, change := range changes {
		a, b := base(), base()
		change(&b)
		want := reflect.DeepEqual(a, b)
		if got := eq(unsafe.Pointer(&a), unsafe.Pointer(&b)); got != want {
			t.Errorf("%s: equalFor says %v, reflect.DeepEqual %v", name, got, want)
		}
	}
	// Empty slices on both sides are equal; nil against empty is not.
	a, b := base(), base()
	a.S, b.S = []int32{}, []int32{}
	if !eq(unsafe.Pointer(&a), unsafe.Pointer(&b)) {
		t.Error("two empty slices differ")
	}
	b.S = nil
	if eq(unsafe.Pointer(&a), unsafe.Pointer(&b)) {
		t.Error("an empty slice equals a nil one (DeepEqual tells them apart)")
	}
}
