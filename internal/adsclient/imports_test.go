package adsclient

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package a plain protocol client: its non-test files
// import only the standard library, gRPC, go-control-plane and the protobuf
// types these are built from, so that any package's tests can use it.
func TestImports(t *testing.T) {
	allowed := []string{
		"google.golang.org/grpc",
		"github.com/envoyproxy/go-control-plane/",
		"google.golang.org/protobuf/",
		"google.golang.org/genproto/googleapis/rpc/",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			checked++
			first, _, _ := strings.Cut(path, "/")
			if !strings.Contains(first, ".") {
				continue // standard library
			}
			ok := false
			for _, a := range allowed {
				ok = ok || path == strings.TrimSuffix(a, "/") || strings.HasPrefix(path, strings.TrimSuffix(a, "/")+"/")
			}
			if !ok {
				t.Errorf("%s imports %s: adsclient may import only the standard library, gRPC, go-control-plane and protobuf types", file, path)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no imports checked")
	}
}
