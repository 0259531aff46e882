// Package policyload reads policy files and endpoints files from disk for
// both the agent and the CLI, so that `moat policy compile|trace` explains
// exactly the policy set the agent enforces. The policy package stays pure
// (bytes in, policies out); this package owns the file system: which files
// of a directory are policies, in what order they load, and what happens
// when one of them is bad or defines a policy another file already defines.
//
// Semantics, the same for every caller:
//
//   - A path is a file or a directory walked recursively in lexical order.
//     Files ending in .yaml, .yml or .json are read. Hidden files and
//     directories (a leading "."; this covers Kubernetes ConfigMap volumes'
//     "..data" copies and editor files like ".a.yaml.swp" or ".#a.yaml") and
//     editor backups ("a.yaml~", "#a.yaml#") are ignored.
//   - A file is accepted or rejected as a whole: a file with any error keeps
//     its previous good version in force (Loader), or contributes nothing
//     (a first load).
//   - A policy (kind, namespace, name) defined by two files is an error of
//     the file that came later, naming both files; the earlier-loaded
//     definition stays in force. On a first load "earlier" is the walk
//     order; on a refresh a definition already in force keeps its place.
//
// It must never compile or enforce anything: it hands policies to callers.
package policyload
