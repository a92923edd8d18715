#!/bin/sh
# Build the BPF object loaded by bpfnetlog's eBPF capture (apt: clang llvm libbpf-dev).
set -eu
cd "$(dirname "$0")"
ARCH_INC="/usr/include/$(uname -m)-linux-gnu"
exec "${CLANG:-clang}" -O2 -g -target bpf -I"$ARCH_INC" -Wall -Werror \
	-c netlog.bpf.c -o netlog.bpf.o
