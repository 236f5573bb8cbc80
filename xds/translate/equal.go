package translate

import (
	"reflect"
	"sync"
	"unsafe"

	"github.com/modelsplit/modelsplit/config"
)

// sameEndpoint reports whether two endpoints are equal by
// reflect.DeepEqual's rules, which is what decides whether an endpoint is
// built again. It is a comparison compiled once per type from the type's
// fields (offsets and a comparer per kind), so it walks no reflect.Value:
// reflect.DeepEqual on 1,000 endpoints was the larger part of an Update
// that changed one. Every field is compared, whatever the type gains
// (TestSameEndpointIsDeepEqual mutates each one).
func sameEndpoint(a, b *config.Endpoint) bool {
	return endpointEqual(unsafe.Pointer(a), unsafe.Pointer(b))
}

var endpointEqual = equalFor(reflect.TypeFor[config.Endpoint]())

// eqFunc compares two values of one type, given their addresses.
type eqFunc func(a, b unsafe.Pointer) bool

var eqFuncs sync.Map // reflect.Type → eqFunc

// equalFor compiles reflect.DeepEqual's comparison for t. Kinds it has no
// specialised comparer for (maps, interfaces, funcs, channels) are handed
// to reflect.DeepEqual itself.
func equalFor(t reflect.Type) eqFunc {
	if f, ok := eqFuncs.Load(t); ok {
		return f.(eqFunc)
	}
	// A recursive type reaches itself while compiling: it gets this
	// forwarder, which calls the compiled function once it exists.
	var compiled eqFunc
	eqFuncs.Store(t, eqFunc(func(a, b unsafe.Pointer) bool { return compiled(a, b) }))
	compiled = compileEqual(t)
	eqFuncs.Store(t, compiled)
	return compiled
}

func compileEqual(t reflect.Type) eqFunc {
	switch t.Kind() {
	case reflect.Bool:
		return func(a, b unsafe.Pointer) bool { return *(*bool)(a) == *(*bool)(b) }
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		switch t.Size() {
		case 1:
			return func(a, b unsafe.Pointer) bool { return *(*uint8)(a) == *(*uint8)(b) }
		case 2:
			return func(a, b unsafe.Pointer) bool { return *(*uint16)(a) == *(*uint16)(b) }
		case 4:
			return func(a, b unsafe.Pointer) bool { return *(*uint32)(a) == *(*uint32)(b) }
		case 8:
			return func(a, b unsafe.Pointer) bool { return *(*uint64)(a) == *(*uint64)(b) }
		}
	case reflect.Float32:
		// As ==: NaN differs from itself, -0 equals 0 (DeepEqual's rules).
		return func(a, b unsafe.Pointer) bool { return *(*float32)(a) == *(*float32)(b) }
	case reflect.Float64:
		return func(a, b unsafe.Pointer) bool { return *(*float64)(a) == *(*float64)(b) }
	case reflect.Complex64:
		return func(a, b unsafe.Pointer) bool { return *(*complex64)(a) == *(*complex64)(b) }
	case reflect.Complex128:
		return func(a, b unsafe.Pointer) bool { return *(*complex128)(a) == *(*complex128)(b) }
	case reflect.String:
		return func(a, b unsafe.Pointer) bool { return *(*string)(a) == *(*string)(b) }
	case reflect.Struct:
		type field struct {
			off uintptr
			eq  eqFunc
		}
		fields := make([]field, t.NumField())
		for i := range fields {
			f := t.Field(i)
			fields[i] = field{f.Offset, equalFor(f.Type)}
		}
		return func(a, b unsafe.Pointer) bool {
			for _, f := range fields {
				if !f.eq(unsafe.Add(a, f.off), unsafe.Add(b, f.off)) {
					return false
				}
			}
			return true
		}
	case reflect.Pointer:
		elem := equalFor(t.Elem())
		return func(a, b unsafe.Pointer) bool {
			pa, pb := *(*unsafe.Pointer)(a), *(*unsafe.Pointer)(b)
			switch {
			case pa == pb:
				return true
			case pa == nil || pb == nil:
				return false
			}
			return elem(pa, pb)
		}
	case reflect.Slice:
		elem, size := equalFor(t.Elem()), t.Elem().Size()
		return func(a, b unsafe.Pointer) bool {
			sa, sb := (*sliceHeader)(a), (*sliceHeader)(b)
			switch {
			case (sa.data == nil) != (sb.data == nil) || sa.len != sb.len:
				// DeepEqual tells a nil slice from an empty one.
				return false
			case sa.data == sb.data:
				return true
			}
			for i := range uintptr(sa.len) {
				if !elem(unsafe.Add(sa.data, i*size), unsafe.Add(sb.data, i*size)) {
					return false
				}
			}
			return true
		}
	case reflect.Array:
		elem, size, n := equalFor(t.Elem()), t.Elem().Size(), uintptr(t.Len())
		return func(a, b unsafe.Pointer) bool {
			for i := range n {
				if !elem(unsafe.Add(a, i*size), unsafe.Add(b, i*size)) {
					return false
				}
			}
			return true
		}
	}
	return func(a, b unsafe.Pointer) bool {
		return reflect.DeepEqual(reflect.NewAt(t, a).Elem().Interface(), reflect.NewAt(t, b).Elem().Interface())
	}
}

// sliceHeader is a slice's layout (reflect.SliceHeader without its
// deprecation).
type sliceHeader struct {
	data     unsafe.Pointer
	len, cap int
}
