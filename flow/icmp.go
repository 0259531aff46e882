package flow

import "fmt"

// ICMP type names in the form Hubble's icmp metric uses: "EchoRequest",
// "DestinationUnreachable(Port)", unknown types as "type(code)".

type icmpType struct {
	name  string
	codes map[uint8]string
}

var icmpv4Types = map[uint8]icmpType{
	0: {name: "EchoReply"},
	3: {name: "DestinationUnreachable", codes: map[uint8]string{
		0: "Net", 1: "Host", 2: "Protocol", 3: "Port", 4: "FragmentationNeeded", 5: "SourceRoutingFailed",
		6: "NetUnknown", 7: "HostUnknown", 8: "SourceIsolated", 9: "NetAdminProhibited",
		10: "HostAdminProhibited", 11: "NetTOS", 12: "HostTOS", 13: "CommAdminProhibited",
		14: "HostPrecedence", 15: "PrecedenceCutoff",
	}},
	4:  {name: "SourceQuench"},
	5:  {name: "Redirect", codes: map[uint8]string{0: "Network", 1: "Host", 2: "TOS+Network", 3: "TOS+Host"}},
	8:  {name: "EchoRequest"},
	9:  {name: "RouterAdvertisement"},
	10: {name: "RouterSolicitation"},
	11: {name: "TimeExceeded", codes: map[uint8]string{0: "TTLExceeded", 1: "FragmentReassemblyTimeExceeded"}},
	12: {name: "ParameterProblem", codes: map[uint8]string{0: "PointerIndicatesError", 1: "MissingOption", 2: "BadLength"}},
	13: {name: "TimestampRequest"},
	14: {name: "TimestampReply"},
}

var icmpv6Types = map[uint8]icmpType{
	1: {name: "DestinationUnreachable", codes: map[uint8]string{
		0: "NoRouteToDst", 1: "AdminProhibited", 2: "BeyondScopeOfSrc", 3: "Address", 4: "Port",
		5: "SrcAddressFailedPolicy", 6: "RejectRouteToDst",
	}},
	2:   {name: "PacketTooBig"},
	3:   {name: "TimeExceeded", codes: map[uint8]string{0: "HopLimitExceeded", 1: "FragmentReassemblyTimeExceeded"}},
	4:   {name: "ParameterProblem", codes: map[uint8]string{0: "ErroneousHeaderField", 1: "UnrecognizedNextHeader", 2: "UnrecognizedIPv6Option"}},
	128: {name: "EchoRequest"},
	129: {name: "EchoReply"},
	133: {name: "RouterSolicitation"},
	134: {name: "RouterAdvertisement"},
	135: {name: "NeighborSolicitation"},
	136: {name: "NeighborAdvertisement"},
	137: {name: "Redirect"},
}

func icmpv4TypeName(t, c uint8) string { return icmpTypeName(icmpv4Types, t, c) }
func icmpv6TypeName(t, c uint8) string { return icmpTypeName(icmpv6Types, t, c) }

func icmpTypeName(table map[uint8]icmpType, t, c uint8) string {
	it, ok := table[t]
	if !ok {
		return fmt.Sprintf("%d(%d)", t, c)
	}
	if it.codes == nil {
		if c == 0 {
			return it.name
		}
		return fmt.Sprintf("%s(Code: %d)", it.name, c)
	}
	if cn, ok := it.codes[c]; ok {
		return it.name + "(" + cn + ")"
	}
	return fmt.Sprintf("%s(Code: %d)", it.name, c)
}
