package policy

import (
	"os"
	"path/filepath"
	"testing"
)

func testLabels(app string) Labels {
	return NewLabels(SourceK8s, map[string]string{"app": app, LabelNamespace: "default"})
}

func TestMemoryAllocator(t *testing.T) {
	t.Parallel()
	a := NewMemoryAllocator()
	mustAlloc := func(app string) ID {
		t.Helper()
		id, err := a.Allocate(testLabels(app))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	steps := []struct {
		name string
		do   func() ID
		want ID
	}{
		{"first label set gets 256", func() ID { return mustAlloc("a") }, 256},
		{"second gets 257", func() ID { return mustAlloc("b") }, 257},
		{"same labels same id", func() ID { return mustAlloc("a") }, 256},
		{"third gets 258", func() ID { return mustAlloc("c") }, 258},
		{"released id is reused lowest first", func() ID {
			if err := a.Release(257); err != nil {
				t.Fatal(err)
			}
			return mustAlloc("d")
		}, 257},
		{"referenced twice survives one release", func() ID {
			if err := a.Release(256); err != nil {
				t.Fatal(err)
			}
			return mustAlloc("a")
		}, 256},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Fatalf("%s: got %d, want %d", s.name, got, s.want)
		}
	}
	if ls, ok := a.Lookup(257); !ok || ls["app"].Value != "d" {
		t.Errorf("Lookup(257) = %v, %v", ls, ok)
	}
	if _, ok := a.Lookup(300); ok {
		t.Error("Lookup of an unallocated identity succeeded")
	}
	if err := a.Release(300); err == nil {
		t.Error("Release of an unallocated identity succeeded")
	}
}

func TestFileAllocatorPersists(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, err := NewFileAllocator(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]ID{}
	for _, app := range []string{"a", "b", "c"} {
		if ids[app], err = a.Allocate(testLabels(app)); err != nil {
			t.Fatal(err)
		}
	}
	if ids["a"] != 256 || ids["b"] != 257 || ids["c"] != 258 {
		t.Fatalf("ids = %v", ids)
	}
	if err := a.Release(ids["b"]); err != nil {
		t.Fatal(err)
	}

	// Re-open: the same label sets get the same numbers, in any order, and
	// an unreferenced one keeps its number rather than going to a newcomer.
	b, err := NewFileAllocator(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		app  string
		want ID
	}{{"new", 259}, {"c", 258}, {"b", 257}, {"a", 256}} {
		got, err := b.Allocate(testLabels(tc.app))
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("after re-open %s = %d, want %d", tc.app, got, tc.want)
		}
	}
	if ls, ok := b.Lookup(257); !ok || ls.Key() != testLabels("b").Key() {
		t.Errorf("Lookup(257) = %v", ls)
	}
	// No temporary files are left behind.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != FileAllocatorFile {
		t.Errorf("state dir holds %v", ents)
	}
}

func TestFileAllocatorRejectsCorruptState(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, content string
	}{
		{"not json", "{"},
		{"wrong version", `{"version":2}`},
		{"id out of range", `{"version":1,"identities":[{"id":5,"labels":{}}]}`},
		{"duplicate id", `{"version":1,"identities":[{"id":300,"labels":{"a":{"source":"k8s","key":"a","value":"1"}}},{"id":300,"labels":{"a":{"source":"k8s","key":"a","value":"2"}}}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileAllocatorFile), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := NewFileAllocator(dir); err == nil {
				t.Error("NewFileAllocator accepted corrupt state")
			}
		})
	}
}

func TestCompilerReleasesIdentities(t *testing.T) {
	t.Parallel()
	a := NewMemoryAllocator()
	c := NewCompiler(Options{}, a)
	for _, ep := range []Endpoint{tep("default", "x", "10.0.0.1", "app=x"), tep("default", "y", "10.0.0.2", "app=x")} {
		if err := c.UpsertEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}
	p := c.Plan()
	id := p.Endpoints[0].Identity
	if p.Endpoints[1].Identity != id {
		t.Fatalf("endpoints with equal labels have identities %d and %d", id, p.Endpoints[1].Identity)
	}
	for _, name := range []string{"x", "y"} {
		if _, err := c.DeleteEndpoint("default", name); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := a.Lookup(id); ok {
		t.Errorf("identity %d still allocated after its endpoints went", id)
	}
	if got := len(c.Plan().Identities); got != len(ReservedIdentities()) {
		t.Errorf("%d identities, want only the reserved ones", got)
	}
}
