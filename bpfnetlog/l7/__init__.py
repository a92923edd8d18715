"""Stream reassembly and sans-IO protocol parsers: payloads in, bpf_net_l7_log records out."""
