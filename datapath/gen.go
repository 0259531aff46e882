package datapath

// The BPF programs in bpf/ are compiled with Debian's clang-14 into
// moat_bpfel.o (tc, bpf/moat.c), sockops_bpfel.o (TCP health, bpf/sockops.c)
// and prefilter_bpfel.o (XDP, bpf/xdp.c), each wrapped by its _bpfel.go;
// all are committed. ratelimit_bpfel_test.o (bpf/ratelimit_probe.c) only
// serves the tests of bpf/ratelimit.h. Regenerate with `go generate ./datapath` (needs
// clang-14, llvm-strip-14, libbpf-dev); the output does not depend on the
// checkout's directory.
//go:generate go tool bpf2go -cc clang-14 -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -type event -type policy_key -type policy_hkey -type policy_val -type ipcache_key -type ipcache_val -type endpoint_config -type ct_key -type ct_entry -type frag_key -type frag_val -type ipcache_host_key -type ep_stats -type rule_stats -type event_stats moat ../bpf/moat.c
//go:generate go tool bpf2go -cc clang-14 -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -type tcp_event -type tcp_event_stats sockops ../bpf/sockops.c
//go:generate go tool bpf2go -cc clang-14 -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -type prefilter_key -type prefilter_val -type prefilter_stats prefilter ../bpf/xdp.c
//go:generate go tool bpf2go -cc clang-14 -target bpfel -output-suffix _test -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -type ratelimit_case ratelimit ../bpf/ratelimit_probe.c
