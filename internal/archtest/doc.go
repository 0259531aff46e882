// Package archtest holds no code: its test enforces the dependency direction
// of ARCHITECTURE.md, so that a forbidden import fails CI instead of eroding
// the layering one convenient shortcut at a time.
package archtest
