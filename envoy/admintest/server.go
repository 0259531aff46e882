package admintest

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Server is a fake Envoy admin interface. Its zero value is not usable;
// use New. Setters may be called while it serves.
type Server struct {
	mu         sync.Mutex
	state      string
	info       *adminv3.ServerInfo
	dump       *adminv3.ConfigDump
	stats      []string
	prometheus string
	requests   []string
	drains     int
}

// New returns a LIVE server with an empty config dump and no stats.
func New() *Server {
	return &Server{
		state: "LIVE",
		info:  &adminv3.ServerInfo{Version: "admintest/1.0", State: adminv3.ServerInfo_LIVE},
		dump:  &adminv3.ConfigDump{},
	}
}

// SetState sets /ready's answer (200 for LIVE, 503 otherwise).
func (s *Server) SetState(state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = state
}

// SetServerInfo sets /server_info.
func (s *Server) SetServerInfo(info *adminv3.ServerInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.info = info
}

// SetDump sets /config_dump.
func (s *Server) SetDump(d *adminv3.ConfigDump) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dump = d
}

// SetStats sets /stats ("name: value" lines) and /stats/prometheus.
func (s *Server) SetStats(lines []string, prometheusText string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats, s.prometheus = lines, prometheusText
}

// Requests returns "METHOD /path?query" of every request so far.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Drains counts POST /drain_listeners?graceful requests.
func (s *Server) Drains() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drains
}

// ServeUnix serves on a unix socket in a fresh temporary directory until
// the test ends and returns the socket path.
func (s *Server) ServeUnix(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen on %s: %v", path, err)
	}
	s.serve(t, ln)
	return path
}

// ServeTCP serves on 127.0.0.1:0 until the test ends and returns host:port.
func (s *Server) ServeTCP(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.1:0: %v", err)
	}
	s.serve(t, ln)
	return ln.Addr().String()
}

func (s *Server) serve(t testing.TB, ln net.Listener) {
	srv := &http.Server{Handler: s}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns when Close is called
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

var marshal = protojson.MarshalOptions{UseProtoNames: true, Indent: "  "}

// ServeHTTP implements the admin endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := r.Method + " " + r.URL.Path
	if r.URL.RawQuery != "" {
		req += "?" + r.URL.RawQuery
	}
	s.requests = append(s.requests, req)
	q := r.URL.Query()
	switch {
	case r.URL.Path == "/ready" && r.Method == http.MethodGet:
		if s.state != "LIVE" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, s.state)
	case r.URL.Path == "/server_info" && r.Method == http.MethodGet:
		writeProto(w, s.info)
	case r.URL.Path == "/config_dump" && r.Method == http.MethodGet:
		d := s.dump
		if res := q.Get("resource"); res != "" {
			var err error
			if d, err = selectResource(d, res); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		writeProto(w, d)
	case r.URL.Path == "/stats" && r.Method == http.MethodGet:
		re, err := regexp.Compile(q.Get("filter"))
		if err != nil {
			http.Error(w, "Invalid re2 regex", http.StatusBadRequest)
			return
		}
		for _, l := range s.stats {
			name, _, _ := strings.Cut(l, ":")
			if re.MatchString(name) {
				fmt.Fprintln(w, l)
			}
		}
	case r.URL.Path == "/stats/prometheus" && r.Method == http.MethodGet:
		fmt.Fprint(w, s.prometheus)
	case r.URL.Path == "/drain_listeners" && r.Method == http.MethodPost:
		if q.Has("graceful") {
			s.drains++
		}
		fmt.Fprintln(w, "OK")
	default:
		http.Error(w, "invalid path. admin commands are:", http.StatusNotFound)
	}
}

func writeProto(w http.ResponseWriter, m proto.Message) {
	b, err := marshal.Marshal(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// selectResource returns the per-resource shape of /config_dump?resource=:
// one Any per element of the named repeated field.
func selectResource(d *adminv3.ConfigDump, field string) (*adminv3.ConfigDump, error) {
	out := &adminv3.ConfigDump{}
	for _, a := range d.GetConfigs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, err
		}
		fd := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(field))
		if fd == nil || !fd.IsList() || fd.Message() == nil {
			continue
		}
		l := m.ProtoReflect().Get(fd).List()
		for i := range l.Len() {
			e, err := anypb.New(l.Get(i).Message().Interface())
			if err != nil {
				return nil, err
			}
			out.Configs = append(out.Configs, e)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s mask not found", field)
}
