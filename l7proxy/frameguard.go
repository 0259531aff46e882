package l7proxy

import (
	"bytes"
	"net"
	"strconv"
	"strings"
)

// frameGuard reads HTTP/1 message framing ahead of net/http and refuses
// what Envoy's codec refuses but net/http tolerates: a request with both
// Transfer-Encoding and Content-Length (net/http drops Content-Length), and
// a request with more than one Content-Length (net/http merges equal
// values), and a header continued by obsolete line folding (net/http
// unfolds it). Such a request is replaced by a malformed request line, so that
// net/http answers 400 and closes the connection in order with any response
// it is writing.
//
// It tracks message boundaries (Content-Length and chunked bodies) to find
// every request head on a keep-alive connection. After an HTTP/2 preface, a
// CONNECT request, or anything it cannot frame, it stops looking and passes
// bytes through: net/http then parses (and rejects) them itself, and the
// handler closes the connection after a CONNECT. An Upgrade request is
// framed like any other: the proxy never switches protocols (an upgrade
// request is refused and its connection closed), so the next bytes are
// HTTP/1 again.
type frameGuard struct {
	net.Conn
	max       int
	pending   []byte // read from the socket, not yet classified
	ready     []byte // classified, for net/http
	state     guardState
	remaining int64 // body bytes left (stateBody) or chunk bytes left incl. CRLF (stateChunkData)
	after     guardState
	readErr   error
}

type guardState uint8

const (
	stateHead guardState = iota
	stateBody
	stateChunkSize
	stateChunkData
	stateTrailer
	statePass
	stateDone
)

// badRequest is what net/http sees instead of a refused request.
var badRequest = []byte("INVALID\r\n\r\n")

func newFrameGuard(c net.Conn, maxHead int) net.Conn {
	return &frameGuard{Conn: c, max: maxHead}
}

func (g *frameGuard) Read(p []byte) (int, error) {
	for len(g.ready) == 0 {
		if g.state == stateDone {
			return 0, net.ErrClosed
		}
		if g.state == statePass && len(g.pending) == 0 {
			return g.Conn.Read(p)
		}
		if g.state == stateBody && len(g.pending) == 0 && g.remaining > 0 {
			// Fast path: body bytes straight from the socket.
			if int64(len(p)) > g.remaining {
				p = p[:g.remaining]
			}
			n, err := g.Conn.Read(p)
			g.remaining -= int64(n)
			if g.remaining == 0 {
				g.state = g.after
			}
			return n, err
		}
		if g.step() {
			continue
		}
		if err := g.readErr; err != nil {
			// Errors are not sticky: net/http aborts background reads
			// with a past deadline and then reads again.
			g.readErr = nil
			return 0, err
		}
		g.fill()
	}
	n := copy(p, g.ready)
	g.ready = g.ready[n:]
	return n, nil
}

func (g *frameGuard) fill() {
	if cap(g.pending)-len(g.pending) < 4096 {
		np := make([]byte, len(g.pending), 2*cap(g.pending)+16384)
		copy(np, g.pending)
		g.pending = np
	}
	n, err := g.Conn.Read(g.pending[len(g.pending):cap(g.pending)])
	g.pending = g.pending[:len(g.pending)+n]
	if err != nil {
		g.readErr = err
	}
}

// release moves n pending bytes to ready.
func (g *frameGuard) release(n int) {
	g.ready = append(g.ready[:0], g.pending[:n]...)
	g.pending = append(g.pending[:0], g.pending[n:]...)
}

// step classifies pending bytes; false means more bytes are needed.
func (g *frameGuard) step() bool {
	switch g.state {
	case statePass:
		g.release(len(g.pending))
		return true
	case stateBody:
		if len(g.pending) == 0 {
			return false
		}
		n := min(int64(len(g.pending)), g.remaining)
		g.release(int(n))
		g.remaining -= n
		if g.remaining == 0 {
			g.state = g.after
		}
		return true
	case stateChunkSize, stateTrailer:
		i := bytes.IndexByte(g.pending, '\n')
		if i < 0 {
			if len(g.pending) > 4096 {
				g.state = statePass
				return true
			}
			return false
		}
		line := strings.TrimRight(string(g.pending[:i]), "\r")
		g.release(i + 1)
		if g.state == stateTrailer {
			if line == "" {
				g.state = g.after
			}
			return true
		}
		sz, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(sz), 16, 64)
		if err != nil || n < 0 {
			g.state = statePass // net/http rejects it
			return true
		}
		if n == 0 {
			g.state = stateTrailer
		} else {
			g.state, g.remaining = stateChunkData, n+2
		}
		return true
	case stateChunkData:
		if len(g.pending) == 0 {
			return false
		}
		n := min(int64(len(g.pending)), g.remaining)
		g.release(int(n))
		g.remaining -= n
		if g.remaining == 0 {
			g.state = stateChunkSize
		}
		return true
	case stateHead:
		return g.head()
	}
	return false
}

// head classifies one request head once it is complete.
func (g *frameGuard) head() bool {
	// Empty lines before a request line are allowed (RFC 9112 2.2).
	start := 0
	for start < len(g.pending) && (g.pending[start] == '\r' || g.pending[start] == '\n') {
		start++
	}
	end := -1
	if i := bytes.Index(g.pending[start:], []byte("\n\r\n")); i >= 0 {
		end = start + i + 3
	}
	if i := bytes.Index(g.pending[start:], []byte("\n\n")); i >= 0 && (end < 0 || start+i+2 < end) {
		end = start + i + 2
	}
	if end < 0 {
		if len(g.pending) > g.max {
			g.state = statePass // net/http answers 431
			return true
		}
		return false
	}
	lines := strings.Split(strings.ReplaceAll(string(g.pending[start:end]), "\r\n", "\n"), "\n")
	reqLine := lines[0]
	if strings.HasPrefix(reqLine, "PRI * HTTP/2") || strings.HasPrefix(reqLine, "CONNECT ") {
		g.state = statePass
		return true
	}
	var cls, tes []string
	for _, l := range lines[1:] {
		if l != "" && (l[0] == ' ' || l[0] == '\t') {
			// Obsolete line folding (RFC 9112 5.2): a server must reject
			// it or unfold it; back ends disagree on how, so reject.
			return g.refuse()
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			cls = append(cls, value)
		case "transfer-encoding":
			tes = append(tes, value)
		}
	}
	if len(cls) > 1 || (len(cls) > 0 && len(tes) > 0) {
		return g.refuse()
	}
	g.release(end)
	g.after = stateHead
	switch {
	case len(tes) > 0:
		codings := strings.Split(strings.Join(tes, ","), ",")
		if strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked") {
			g.state = stateChunkSize
		} else {
			g.state = statePass // net/http refuses other codings
		}
	case len(cls) == 1:
		n, err := strconv.ParseInt(cls[0], 10, 64)
		switch {
		case err != nil || n < 0:
			g.state = statePass // net/http refuses it
		case n == 0:
			g.state = g.after
		default:
			g.state, g.remaining = stateBody, n
		}
	default:
		g.state = g.after
	}
	return true
}

// refuse replaces the request with one net/http answers with 400, and
// stops reading the connection.
func (g *frameGuard) refuse() bool {
	g.ready = append(g.ready[:0], badRequest...)
	g.pending = nil
	g.state = stateDone
	return true
}
