package l7proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// frameGuardSeeds are pipelined HTTP/1 inputs, well-formed and not.
var frameGuardSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 1\r\nCONTENT-LENGTH: 2\r\n\r\nxy",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n\tContent-Length: 5\r\n\r\nhello",
	"GET / HTTP/1.1\nHost: a\n\nGET /b HTTP/1.1\nHost: a\nContent-Length: 2\n\nab",
	"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nabPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n0\r\n\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
	"CONNECT a:80 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 1\r\n\r\nx",
	"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
}

// parsedRequest is what net/http makes of one request: everything that
// decides what the handler sees and where the next request starts.
type parsedRequest struct {
	Method, URI, Proto, Host string
	Header                   http.Header
	TransferEncoding         []string
	ContentLength            int64
	Body                     string
	Trailer                  http.Header
}

// readRequests parses raw as net/http's server would, one request after
// another, and returns each request with the bytes it spans.
func readRequests(raw []byte) (reqs []parsedRequest, spans []string, err error) {
	r := bytes.NewReader(raw)
	br := bufio.NewReader(r)
	start := 0
	for len(reqs) < 32 {
		req, err := http.ReadRequest(br)
		if err != nil {
			return reqs, spans, err
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return reqs, spans, err
		}
		end := len(raw) - r.Len() - br.Buffered()
		reqs = append(reqs, parsedRequest{
			Method: req.Method, URI: req.RequestURI, Proto: req.Proto, Host: req.Host, Header: req.Header,
			TransferEncoding: req.TransferEncoding, ContentLength: req.ContentLength, Body: string(body), Trailer: req.Trailer,
		})
		spans = append(spans, string(raw[start:end]))
		start = end
		if req.Method == http.MethodConnect || req.Method == "PRI" {
			// The guard passes what follows through; so does the proxy's
			// handler close such a connection.
			return reqs, spans, nil
		}
	}
	return reqs, spans, nil
}

// mustRefuse reports whether a request's raw bytes carry framing the guard
// exists to refuse: more than one Content-Length, Content-Length with
// Transfer-Encoding, or obsolete line folding.
func mustRefuse(span string) bool {
	head, _, _ := strings.Cut(strings.ReplaceAll(span, "\r\n", "\n"), "\n\n")
	head = strings.TrimLeft(head, "\n")
	lines := strings.Split(head, "\n")
	cl, te := 0, 0
	for _, l := range lines[1:] {
		if l != "" && (l[0] == ' ' || l[0] == '\t') {
			return true
		}
		name, _, _ := strings.Cut(l, ":")
		switch strings.ToLower(name) {
		case "content-length":
			cl++
		case "transfer-encoding":
			te++
		}
	}
	return cl > 1 || cl > 0 && te > 0
}

// byteConn is a net.Conn that reads raw and then io.EOF.
type byteConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *byteConn) Read(p []byte) (int, error)      { return c.r.Read(p) }
func (c *byteConn) SetReadDeadline(time.Time) error { return nil }

// guarded returns what net/http reads through the frame guard.
func guarded(raw []byte) []byte {
	g := newFrameGuard(&byteConn{r: bytes.NewReader(raw)}, 64<<10)
	var out bytes.Buffer
	buf := make([]byte, 7) // small reads exercise every state boundary
	for {
		n, err := g.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.Bytes()
		}
	}
}

// checkFrameGuard is the differential check: through the guard, net/http
// reads the same requests (method, target, headers, body framing) as
// without it, except that the guard refuses, and must refuse, a request
// with ambiguous framing; after a refusal nothing more is read.
func checkFrameGuard(t *testing.T, raw []byte) {
	ref, spans, refErr := readRequests(raw)
	got, _, gotErr := readRequests(guarded(raw))
	if len(got) > len(ref) {
		t.Fatalf("%q: through the guard net/http reads %d requests, without it %d (%v)", raw, len(got), len(ref), refErr)
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], ref[i]) {
			t.Fatalf("%q: request %d differs through the guard:\n got %+v\nwant %+v", raw, i, got[i], ref[i])
		}
		if mustRefuse(spans[i]) {
			t.Fatalf("%q: request %d (%q) has ambiguous framing but passed the guard", raw, i, spans[i])
		}
	}
	if len(got) < len(ref) {
		// The guard refused request len(got); it may only refuse what it
		// exists to refuse, and net/http then fails to read it.
		if !mustRefuse(spans[len(got)]) {
			t.Fatalf("%q: the guard refused request %d (%q), which net/http reads as %+v", raw, len(got), spans[len(got)], ref[len(got)])
		}
		if gotErr == nil {
			t.Fatalf("%q: refused request %d read without error", raw, len(got))
		}
	}
	if len(got) == len(ref) && (refErr == nil) != (gotErr == nil) && !errors.Is(gotErr, io.EOF) && !errors.Is(refErr, io.EOF) {
		t.Fatalf("%q: after %d requests, error %v through the guard, %v without", raw, len(got), gotErr, refErr)
	}
}

func TestFrameGuardDifferential(t *testing.T) {
	for _, s := range frameGuardSeeds {
		t.Run("", func(t *testing.T) { checkFrameGuard(t, []byte(s)) })
	}
}

func FuzzFrameGuard(f *testing.F) {
	for _, s := range frameGuardSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkFrameGuard(t, raw)
	})
}
