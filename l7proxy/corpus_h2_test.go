package l7proxy_test

import (
	"bytes"
	"io"
	"strconv"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestPathCorpusH2C: the same path rules hold for HTTP/2 with prior
// knowledge, where the target arrives as a raw :path pseudo-header.
func TestPathCorpusH2C(t *testing.T) {
	e := newEnv(t)
	e.setPlan(corpusPlan(e.upstream.Port()))
	e.waitACK()
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/public/x", 200},
		{"/admin", 403},
		{"/public/../admin", 403},
		{"/public/..;/admin", 400},
		{"/public/%2e%2e;/admin", 400},
		{"/public/%2e%2e/admin", 400},
		{"/public//../admin", 400},
		{"/public%2F..%2Fadmin", 400},
		{"/public/%252e%252e/admin", 400},
		{"/public\\..\\admin", 400},
	} {
		t.Run(tc.path, func(t *testing.T) {
			before := e.seen.count()
			if got := e.h2cStatus(t, tc.path); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
			for _, r := range e.seen.since(before) {
				if !corpusAllows(r.method, r.target) {
					t.Errorf("upstream received %s %q", r.method, r.target)
				}
			}
		})
	}
}

// h2cStatus sends one GET with the given raw :path over h2c with prior
// knowledge and returns the response status (0 for a stream reset).
func (e *env) h2cStatus(t *testing.T, path string) int {
	t.Helper()
	c := e.dial(tiefighterIP)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "deathstar"}, {":path", path}} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			fields, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					n, _ := strconv.Atoi(hf.Value)
					return n
				}
			}
			t.Fatalf("no :status in %v", fields)
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return 0
			}
		case *http2.GoAwayFrame:
			// NO_ERROR is a graceful close (the proxy closes after a
			// 400): the response still follows.
			if f.ErrCode != http2.ErrCodeNo {
				t.Fatalf("goaway: %v", f.ErrCode)
			}
		}
	}
}
