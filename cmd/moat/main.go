// Command moat is moat's command-line tool: policy tooling (validate,
// compile, trace), flow observation and Envoy inspection against a running
// agent.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		if err.Error() != "" {
			fmt.Fprintln(os.Stderr, "Error:", err)
		}
		os.Exit(exitCode(err))
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "moat",
		Short:         "moat: L7-aware network policy with eBPF and Envoy",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newPolicyCommand(), newStatusCommand(), newObserveCommand(), newEnvoyCommand(), newFQDNCommand())
	return root
}

// exitError carries a specific exit status (and maybe no message of its own).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}
