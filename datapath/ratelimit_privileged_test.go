package datapath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/moatnet/moat/internal/testutil"
)

// bucketCase is a token bucket and a token_take call on it.
type bucketCase struct {
	name         string
	last, tokens uint64
	now          uint64
	rate, burst  uint32
}

// bucketReference is token_take computed with unbounded integers: the
// tokens earned are floor(elapsed * rate / 1e9), capped at burst; a refill
// that earns none leaves last_ns alone.
func bucketReference(c bucketCase) (taken bool, last, tokens uint64) {
	if c.rate == 0 {
		return true, c.last, c.tokens
	}
	add := new(big.Int).SetUint64(c.now - c.last)
	add.Mul(add, new(big.Int).SetUint64(uint64(c.rate)))
	add.Quo(add, big.NewInt(1_000_000_000))
	if burst := new(big.Int).SetUint64(uint64(c.burst)); add.Cmp(burst) > 0 {
		add = burst
	}
	last, tokens = c.last, c.tokens
	if add.Sign() > 0 {
		sum := add.Add(add, new(big.Int).SetUint64(tokens))
		tokens = uint64(c.burst)
		if sum.IsUint64() && sum.Uint64() < tokens {
			tokens = sum.Uint64()
		}
		last = c.now
	}
	if tokens == 0 {
		return false, last, 0
	}
	return true, last, tokens - 1
}

// TestPrivilegedTokenBucket runs bpf/ratelimit.h's token_take (through
// BPF_PROG_TEST_RUN of bpf/ratelimit_probe.c) against bucketReference,
// including elapsed times whose elapsed * rate does not fit in 64 bits (a
// bucket's first use: last_ns = 0).
func TestPrivilegedTokenBucket(t *testing.T) {
	testutil.Privileged(t)
	var objs ratelimitObjects
	testutil.Require(t, "load ratelimit probe", loadRatelimitObjects(&objs, nil))
	t.Cleanup(func() { _ = objs.Close() })

	cases := []bucketCase{
		{name: "first use after long uptime", now: 1 << 62, rate: 1000, burst: 200},
		{name: "first use, maximal rate", now: 5_000_000_000, rate: math.MaxUint32, burst: 10},
		{name: "clock near wrap, maximal rate and burst", now: math.MaxUint64, rate: math.MaxUint32, burst: math.MaxUint32},
		{name: "seconds below burst, product above burst", last: 1, now: 1 + 100_000_000_000, rate: math.MaxUint32, burst: 1000},
		{name: "sub-second remainder, maximal rate", last: 7, now: 7 + 999_999_999, rate: math.MaxUint32, burst: math.MaxUint32},
		{name: "too soon for a token", last: 1_000, now: 1_000 + 999_999, rate: 1000, burst: 200},
		{name: "one token earned", last: 1_000, now: 1_000 + 1_000_000, rate: 1000, burst: 200},
		{name: "earned and saved", last: 10, tokens: 3, now: 10 + 1_500_000_000, rate: 100, burst: 200},
		{name: "capped at burst", last: 10, tokens: 150, now: 10 + 2_000_000_000, rate: 100, burst: 200},
		{name: "tokens left, nothing earned", last: 10, tokens: 5, now: 10, rate: 100, burst: 200},
		{name: "unlimited", now: 1 << 40, rate: 0, burst: 0},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		last := rng.Uint64N(1 << 63)
		cases = append(cases, bucketCase{
			name: fmt.Sprintf("random %d", i),
			last: last, tokens: uint64(rng.Uint32N(1000)),
			now:  last + rng.Uint64()>>rng.UintN(64),
			rate: rng.Uint32() >> rng.UintN(32), burst: rng.Uint32() >> rng.UintN(32),
		})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.tokens > uint64(c.burst) {
				c.tokens = uint64(c.burst) // a bucket never holds more
			}
			in := ratelimitRatelimitCase{LastNs: c.last, Tokens: c.tokens, Now: c.now, Rate: c.rate, Burst: c.burst}
			var buf bytes.Buffer
			if err := binary.Write(&buf, binary.LittleEndian, &in); err != nil {
				t.Fatal(err)
			}
			pkt := make([]byte, 64)
			copy(pkt, buf.Bytes())
			out := make([]byte, len(pkt))
			ret, err := objs.RatelimitProbe.Run(&ebpf.RunOptions{Data: pkt, DataOut: out})
			if err != nil || ret != 0 {
				t.Fatalf("run probe: return %d, %v", ret, err)
			}
			var got ratelimitRatelimitCase
			if err := binary.Read(bytes.NewReader(out), binary.LittleEndian, &got); err != nil {
				t.Fatal(err)
			}
			taken, last, tokens := bucketReference(c)
			if (got.Taken == 1) != taken || got.LastNs != last || got.Tokens != tokens {
				t.Errorf("token_take(last %d, tokens %d, now %d, rate %d, burst %d) = taken %d, last %d, tokens %d; want taken %v, last %d, tokens %d",
					c.last, c.tokens, c.now, c.rate, c.burst, got.Taken, got.LastNs, got.Tokens, taken, last, tokens)
			}
		})
	}
}
