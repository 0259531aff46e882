package datapath

// The Service translation programs (bpf/sockaddr.c) are compiled into
// sockaddr_bpfel.o and wrapped by sockaddr_bpfel.go (committed), like the
// others (gen.go).
//go:generate go tool bpf2go -cc clang-14 -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -type svc_key -type svc_val -type svc_be_key -type svc_addr -type svc_rnat_key -type svc_sock -type svc_stats sockaddr ../bpf/sockaddr.c
