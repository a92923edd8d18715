"""Sources of packet batches: pcap/pcapng files, eBPF tc programs, AF_PACKET rings."""
