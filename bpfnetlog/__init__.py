"""bpfnetlog: network logs (L4 connections, L7 requests) from eBPF, AF_PACKET or pcap."""

__version__ = "0.1.0"
