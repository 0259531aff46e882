// Package cni is moat-cni, the CNI plugin (spec 1.0 and 1.1: ADD, DEL,
// CHECK, STATUS, GC), and the wire format of the agent's CNI API that it
// calls. The plugin is a thin client: it parses the network config and the
// runtime's arguments, asks the agent over its local unix socket, and
// prints the agent's answer as a CNI result. The agent does all plumbing
// (the same code as its standalone endpoints: routed /32 veth, gateway, no
// bridge), address allocation, program attachment and map writes, and
// answers ADD only once the pod is enforced.
//
// It owns: the plugin's config and argument parsing, the CNI result, the
// API's request and response types. It must never touch the kernel, read
// the agent's state files, or import the agent: a plugin that could act
// without the agent could start a pod unpoliced. When the agent does not
// answer, every verb fails with a CNI error naming the socket.
package cni
