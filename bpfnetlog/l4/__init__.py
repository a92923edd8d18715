"""Connection tracking, TCP analysis and chunking: packets in, bpf_net_l4_log records out."""
