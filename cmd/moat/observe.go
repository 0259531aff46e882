package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newObserveCommand() *cobra.Command {
	var (
		socket, output               string
		verdicts                     []string
		namespace, pod, protocol, l7 string
		port, last                   int
		follow                       bool
		dns                          dnsFilterFlags
	)
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Show flows seen by the running agent (drops, verdicts, proxied requests)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch output {
			case "compact", "json":
			default:
				return fmt.Errorf("--output %q: want compact or json", output)
			}
			if port < 0 || port > 65535 {
				return fmt.Errorf("--port %d: want 0-65535", port)
			}
			if last < 0 {
				return fmt.Errorf("--last %d: want a non-negative number", last)
			}
			q := url.Values{}
			for _, v := range verdicts {
				q.Add("verdict", strings.ToUpper(v))
			}
			set := func(k, v string) {
				if v != "" {
					q.Set(k, v)
				}
			}
			set("namespace", namespace)
			set("pod", pod)
			set("protocol", protocol)
			set("l7", l7)
			if port > 0 {
				q.Set("port", strconv.Itoa(port))
			}
			if err := dns.addTo(q); err != nil {
				return err
			}
			q.Set("last", strconv.Itoa(last))
			q.Set("follow", strconv.FormatBool(follow))
			body, err := newAgentClient(socket).get(cmd.Context(), "/v1/flows", q)
			if err != nil {
				return err
			}
			defer body.Close()
			return printFlows(cmd.OutOrStdout(), body, output)
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "agent", defaultAgentSocket, "moat-agent API socket")
	f.StringSliceVar(&verdicts, "verdict", nil, "only these verdicts: FORWARDED, DROPPED, REDIRECTED, ... (repeatable)")
	f.StringVar(&namespace, "namespace", "", "only flows from or to this namespace")
	f.StringVar(&pod, "pod", "", "only flows from or to this endpoint (name or namespace/name)")
	f.StringVar(&protocol, "protocol", "", "only this protocol: tcp, udp, icmpv4, icmpv6, http, dns")
	f.IntVar(&port, "port", 0, "only flows with this source or destination port")
	f.StringVar(&l7, "l7", "", "only L7 flows of this kind: http or dns")
	f.IntVar(&last, "last", 20, "start with this many recent flows")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new flows")
	f.StringVarP(&output, "output", "o", "compact", "output format: compact or json")
	dns.register(f)
	return cmd
}

// flowLine is the subset of the flow JSON that the compact format shows.
type flowLine struct {
	Time    time.Time `json:"time"`
	Verdict string    `json:"verdict"`
	Drop    string    `json:"drop_reason_desc"`
	Dir     string    `json:"traffic_direction"`
	IP      struct {
		Source      string `json:"source"`
		Destination string `json:"destination"`
	} `json:"IP"`
	Source      flowEndpoint `json:"source"`
	Destination flowEndpoint `json:"destination"`
	L4          *struct {
		Protocol        string   `json:"protocol"`
		SourcePort      uint16   `json:"source_port"`
		DestinationPort uint16   `json:"destination_port"`
		Flags           []string `json:"flags"`
		ICMPType        *uint8   `json:"icmp_type"`
	} `json:"l4"`
	L7 *struct {
		Type string `json:"type"`
		HTTP *struct {
			Code   int    `json:"code"`
			Method string `json:"method"`
			URL    string `json:"url"`
		} `json:"http"`
		DNS *struct {
			Query string `json:"query"`
			Rcode int    `json:"rcode"`
		} `json:"dns"`
	} `json:"l7"`
}

type flowEndpoint struct {
	Namespace string `json:"namespace"`
	PodName   string `json:"pod_name"`
	Identity  uint32 `json:"identity"`
}

// printFlows copies JSON lines (json) or renders one line per flow (compact).
func printFlows(w io.Writer, r io.Reader, output string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		if output == "json" {
			if _, err := fmt.Fprintf(w, "%s\n", line); err != nil {
				return err
			}
			continue
		}
		var f flowLine
		if err := json.Unmarshal(line, &f); err != nil {
			return fmt.Errorf("decode flow: %w", err)
		}
		fmt.Fprintln(w, compactFlow(&f))
	}
	return sc.Err()
}

func compactFlow(f *flowLine) string {
	name := func(ep flowEndpoint, ip string, port uint16) string {
		s := ip
		if ep.PodName != "" {
			s = ep.Namespace + "/" + ep.PodName
		}
		if port != 0 {
			s += ":" + strconv.Itoa(int(port))
		}
		return s
	}
	var proto string
	var sport, dport uint16
	if l4 := f.L4; l4 != nil {
		proto, sport, dport = l4.Protocol, l4.SourcePort, l4.DestinationPort
		if l4.ICMPType != nil {
			proto += " type " + strconv.Itoa(int(*l4.ICMPType))
		}
		if len(l4.Flags) > 0 {
			proto += " " + strings.Join(l4.Flags, "|")
		}
	}
	s := fmt.Sprintf("%s %s -> %s %s %s", f.Time.Format("Jan _2 15:04:05.000"),
		name(f.Source, f.IP.Source, sport), name(f.Destination, f.IP.Destination, dport), proto, f.Verdict)
	if f.Drop != "" {
		s += " (" + f.Drop + ")"
	}
	if f.L7 != nil {
		if h := f.L7.HTTP; h != nil {
			s += fmt.Sprintf(" http %s %s", h.Method, h.URL)
			if h.Code != 0 {
				s += fmt.Sprintf(" => %d", h.Code)
			}
		}
		if d := f.L7.DNS; d != nil {
			s += " dns " + d.Query + dnsCompactSuffix(f)
		}
	}
	if f.Dir != "" {
		s += " [" + strings.ToLower(f.Dir) + "]"
	}
	return s
}
