package envoy

import (
	"bytes"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// canonicalBytes serialises m so that equal configs give equal bytes
// whatever route they took: every Any (at any depth) is unpacked and
// re-packed deterministically, so map order inside packed filter configs
// and the encoder that packed them do not matter. It is the equality that
// CompareSync uses; protocmp gives the same answers but is three orders of
// magnitude slower on a node's worth of listeners.
func canonicalBytes(m proto.Message) []byte {
	c := proto.Clone(m)
	canonicalise(c.ProtoReflect())
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil
	}
	return b
}

func canonicalEqual(a, b proto.Message) bool {
	ab, bb := canonicalBytes(a), canonicalBytes(b)
	return ab != nil && bb != nil && bytes.Equal(ab, bb)
}

// canonicalise rewrites, in place, the Any values inside m. An Any whose
// type is not linked in stays as it is.
func canonicalise(m protoreflect.Message) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return
		}
		canonicalise(inner.ProtoReflect())
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(inner)
		if err != nil {
			return
		}
		a.Value = b
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					canonicalise(mv.Message())
					return true
				})
			}
		case fd.Message() == nil:
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				canonicalise(l.Get(i).Message())
			}
		default:
			canonicalise(v.Message())
		}
		return true
	})
}
