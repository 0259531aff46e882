package dnsproxy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// store_test.go tests the snapshot + journal on real files.

func storeEntry(name string, i int) CacheEntry {
	now := time.Now().Truncate(time.Second)
	return CacheEntry{Name: name, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), Expires: now.Add(time.Hour), LastSeen: now}
}

func cacheKeys(es []CacheEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name+" "+e.IP.String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestStoreJournalSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dnsproxy.json")
	s, st, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Cache) != 0 || st.Version != StateVersion {
		t.Fatalf("first start: %+v, want an empty state", st)
	}
	want := []CacheEntry{storeEntry("a.example.com.", 1), storeEntry("a.example.com.", 2), storeEntry("b.example.com.", 3)}
	if err := s.Append(want[:2]); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(want[2:]); err != nil {
		t.Fatal(err)
	}
	// No Close, no Compact: the process died.
	s2, st, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := cacheKeys(st.Cache); !slices.Equal(got, cacheKeys(want)) {
		t.Fatalf("after a kill: %v, want %v", got, cacheKeys(want))
	}
	s.Close()
}

func TestStoreCompact(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsproxy.json")
	s, _, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	all := []CacheEntry{storeEntry("a.example.com.", 1), storeEntry("b.example.com.", 2)}
	if err := s.Append(all[:1]); err != nil {
		t.Fatal(err)
	}
	snap := State{Version: StateVersion, Cache: all[:1]}
	if err := s.Compact(func() State { return snap }, false); err != nil {
		t.Fatal(err)
	}
	// After the compaction: one snapshot, one (new) journal.
	js, _ := filepath.Glob(path + ".journal.*")
	if len(js) != 1 {
		t.Fatalf("journals after compaction: %v, want the new one only", js)
	}
	if err := s.Append(all[1:]); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, st, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := cacheKeys(st.Cache); !slices.Equal(got, cacheKeys(all)) {
		t.Fatalf("snapshot + journal: %v, want %v", got, cacheKeys(all))
	}
	// The replayed journal is compacted once; then nothing changed and
	// no new snapshot is written.
	if err := s2.Compact(func() State { return st }, false); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if err := s2.Compact(func() State { t.Fatal("state taken for a clean store"); return State{} }, false); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(path); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatal("a clean store wrote a snapshot")
	}
}

// TestStoreAppendsDuringCompaction: answers appended while a compaction
// runs are in the snapshot or in the journal that follows it, never lost.
func TestStoreAppendsDuringCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dnsproxy.json")
	s, _, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var appended []CacheEntry
	var wg sync.WaitGroup
	const n = 200
	wg.Go(func() {
		for i := range n {
			e := storeEntry(fmt.Sprintf("n%d.example.com.", i), i)
			if err := s.Append([]CacheEntry{e}); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			appended = append(appended, e)
			mu.Unlock()
		}
	})
	for range 20 {
		// The snapshot holds what was appended before it was taken (as
		// the proxy's cache would).
		if err := s.Compact(func() State {
			mu.Lock()
			defer mu.Unlock()
			return State{Version: StateVersion, Cache: slices.Clone(appended)}
		}, true); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	s.Close()
	_, st, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := cacheKeys(st.Cache); len(got) != n {
		t.Fatalf("after concurrent compactions %d of %d answers are on disk", len(got), n)
	}
}

func TestStoreBadFiles(t *testing.T) {
	t.Run("last line cut short", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s.json")
		s, _, err := OpenStore(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Append([]CacheEntry{storeEntry("a.example.com.", 1)}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		js, _ := filepath.Glob(path + ".journal.*")
		f, _ := os.OpenFile(js[0], os.O_APPEND|os.O_WRONLY, 0)
		f.WriteString(`{"e":[{"name":"b.exa`)
		f.Close()
		_, st, err := OpenStore(path)
		if err != nil || len(st.Cache) != 1 {
			t.Fatalf("cut-short last line: %v, %d entries; want the whole lines back", err, len(st.Cache))
		}
	})
	t.Run("bad line inside", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s.json")
		if err := os.WriteFile(path+".journal.3", []byte("{nonsense\n{\"e\":[]}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := OpenStore(path)
		if err == nil || !strings.Contains(err.Error(), "journal.3: line 1") {
			t.Fatalf("bad journal line: %v; want an error naming the file and line", err)
		}
	})
	t.Run("corrupt snapshot", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s.json")
		if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := OpenStore(path)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("corrupt snapshot: %v; want an error naming %s", err, path)
		}
	})
}
