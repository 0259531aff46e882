package datapath

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// dumpAttempts bounds how often a netlink dump is repeated.
const dumpAttempts = 5

// dump runs a netlink dump (list links, addresses, routes, rules) and
// repeats it when the kernel reports that the table changed while it was
// being read (NLM_F_DUMP_INTR): the result of an interrupted dump may miss
// entries, and acting on it could leave links or routes behind. Busy nodes
// change links all the time, so this is an ordinary event, not an error.
func dump[T any](list func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range dumpAttempts {
		v, err = list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}
