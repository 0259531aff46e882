package dnsproxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// store.go keeps the proxy's state on disk so that it survives the agent
// being killed at any moment, not only a clean stop: a snapshot (state.go's
// State) plus an append-only journal of the answers learned since. Every
// learned answer is appended to the journal before it is released to the
// client (one write, no fsync: a killed process loses nothing the kernel
// has; a power cut may lose the last page), and Run compacts the journal
// into a new snapshot every CollectInterval when something changed.
//
// Files: <path> (the snapshot, replaced atomically) and
// <path>.journal.<seq>. A snapshot names the first journal that is not in
// it; journals before that one are leftovers and are removed.

// Store is a Proxy's on-disk state. Safe for concurrent use.
type Store struct {
	path string

	mu      sync.Mutex
	seq     uint64
	journal *os.File
	dirty   bool // something was appended or changed since the snapshot
}

// OpenStore reads the state at path (a missing snapshot is a first start:
// an empty state), replays the journals written after the snapshot, and
// opens a new journal. The returned State is what Proxy.Restore takes. A
// corrupt snapshot is an error that names the file; a journal's last line
// cut short (the agent killed mid-write) is ignored.
func OpenStore(path string) (*Store, State, error) {
	st, err := LoadState(path)
	if errors.Is(err, os.ErrNotExist) {
		st, err = State{Version: StateVersion}, nil
	}
	if err != nil {
		return nil, State{}, err
	}
	seqs, err := journalSeqs(path)
	if err != nil {
		return nil, State{}, err
	}
	next := st.Journal
	for _, seq := range seqs {
		name := journalName(path, seq)
		if seq < st.Journal {
			_ = os.Remove(name) // in the snapshot already
			continue
		}
		entries, err := readJournal(name)
		if err != nil {
			return nil, State{}, err
		}
		st.Cache = append(st.Cache, entries...)
		next = max(next, seq)
	}
	s := &Store{path: path, seq: next + 1, dirty: len(seqs) > 0}
	if s.journal, err = openJournal(path, s.seq); err != nil {
		return nil, State{}, err
	}
	return s, st, nil
}

func journalName(path string, seq uint64) string {
	return path + ".journal." + strconv.FormatUint(seq, 10)
}

func openJournal(path string, seq uint64) (*os.File, error) {
	f, err := os.OpenFile(journalName(path, seq), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open dns proxy journal: %w", err)
	}
	return f, nil
}

// journalSeqs lists the journals of path, oldest first.
func journalSeqs(path string) ([]uint64, error) {
	names, err := filepath.Glob(path + ".journal.*")
	if err != nil {
		return nil, fmt.Errorf("list dns proxy journals: %w", err)
	}
	var out []uint64
	for _, n := range names {
		seq, err := strconv.ParseUint(strings.TrimPrefix(n, path+".journal."), 10, 64)
		if err != nil {
			continue // not ours
		}
		out = append(out, seq)
	}
	slices.Sort(out)
	return out, nil
}

// journalLine is one appended answer.
type journalLine struct {
	Entries []CacheEntry `json:"e"`
}

func readJournal(name string) ([]CacheEntry, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read dns proxy journal: %w", err)
	}
	defer f.Close()
	var out []CacheEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var bad error
	line := 0
	for sc.Scan() {
		line++
		if bad != nil {
			// A bad line followed by more lines is not a cut-short write.
			return nil, bad
		}
		var l journalLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			bad = fmt.Errorf("read dns proxy journal %s: line %d: %w", name, line, err)
			continue
		}
		for i, e := range l.Entries {
			if !e.IP.IsValid() || e.Name == "" {
				return nil, fmt.Errorf("read dns proxy journal %s: line %d: entry %d: no name or address", name, line, i)
			}
		}
		out = append(out, l.Entries...)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read dns proxy journal %s: %w", name, err)
	}
	return out, nil
}

// Append writes learned entries to the journal.
func (s *Store) Append(entries []CacheEntry) error {
	if len(entries) == 0 {
		return nil
	}
	b, err := json.Marshal(journalLine{Entries: entries})
	if err != nil {
		return fmt.Errorf("append to dns proxy journal: %w", err)
	}
	b = append(b, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.journal == nil {
		return errors.New("append to dns proxy journal: store closed")
	}
	s.dirty = true
	if _, err := s.journal.Write(b); err != nil {
		return fmt.Errorf("append to dns proxy journal: %w", err)
	}
	return nil
}

// Touch records a change the journal does not carry (new rules, a flush),
// so that the next Compact writes a snapshot.
func (s *Store) Touch() {
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
}

// Compact writes a snapshot of what state returns (taken after a new
// journal is opened, so every later append is in that journal or in the
// snapshot) and removes the journals it covers. It does nothing when
// nothing changed since the last one, unless force.
func (s *Store) Compact(state func() State, force bool) error {
	s.mu.Lock()
	if s.journal == nil {
		s.mu.Unlock()
		return errors.New("compact dns proxy state: store closed")
	}
	if !s.dirty && !force {
		s.mu.Unlock()
		return nil
	}
	f, err := openJournal(s.path, s.seq+1)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	old := s.journal
	s.journal, s.seq, s.dirty = f, s.seq+1, false
	seq := s.seq
	s.mu.Unlock()
	_ = old.Close()

	st := state()
	st.Journal = seq
	if err := SaveState(s.path, st); err != nil {
		s.Touch()
		return err
	}
	seqs, err := journalSeqs(s.path)
	if err != nil {
		return err
	}
	for _, q := range seqs {
		if q < seq {
			_ = os.Remove(journalName(s.path, q))
		}
	}
	return nil
}

// Close closes the journal (without a snapshot: Compact first for one).
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.journal == nil {
		return nil
	}
	err := s.journal.Close()
	s.journal = nil
	return err
}

// journal appends a learned answer to the store, if any (hold calls it
// before the answer is released). A failed write is logged: the answer
// is released anyway, and the next compaction writes it in the snapshot.
func (p *Proxy) journal(name string, ips []Learned) {
	if p.cfg.Store == nil {
		return
	}
	now := p.cfg.Now()
	entries := make([]CacheEntry, len(ips))
	for i, l := range ips {
		entries[i] = CacheEntry{Name: name, IP: l.IP, Expires: now.Add(max(l.TTL, p.cache.cfg.MinTTL)), LastSeen: now}
	}
	if err := p.cfg.Store.Append(entries); err != nil {
		p.cfg.Store.Touch()
		p.cfg.Logger.Warn("dns proxy: journal a learned answer", "name", name, "err", err)
	}
}

// compact writes the store's snapshot (Run calls it).
func (p *Proxy) compact(force bool) {
	if p.cfg.Store == nil {
		return
	}
	if err := p.cfg.Store.Compact(p.State, force); err != nil {
		p.cfg.Logger.Warn("dns proxy: save state", "err", err)
	}
}

// Flush forgets the cached names pattern selects (Cache.Flush) and writes
// a snapshot at once, so a restart does not bring them back from the
// journal.
func (p *Proxy) Flush(pattern string) (int, error) {
	n, err := p.cache.Flush(pattern)
	if err != nil {
		return 0, err
	}
	if p.cfg.Store != nil {
		if err := p.cfg.Store.Compact(p.State, true); err != nil {
			return n, fmt.Errorf("flush dns cache: %w", err)
		}
	}
	return n, nil
}
