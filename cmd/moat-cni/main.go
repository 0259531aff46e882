// Command moat-cni is moat's CNI plugin (package cni): the container
// runtime runs it, and it asks the node's moat agent over its local socket.
package main

import "github.com/moatnet/moat/cni"

func main() { cni.Main("moat-cni: moat's CNI plugin (routed veth, enforced before ADD returns)") }
