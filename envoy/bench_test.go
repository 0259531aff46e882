package envoy

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

func BenchmarkTranslate(b *testing.B) {
	plan := BenchPlan(1000, 20)
	res, err := Translate(plan, Config{})
	if err != nil {
		b.Fatalf("Translate: %v", err)
	}
	size := 0
	for _, l := range res.Listeners {
		size += proto.Size(l)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Translate(plan, Config{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(size), "listener-bytes")
}

func BenchmarkValidate(b *testing.B) {
	res, err := Translate(BenchPlan(1000, 20), Config{})
	if err != nil {
		b.Fatalf("Translate: %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := res.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
