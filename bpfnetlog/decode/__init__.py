"""Turn raw frames (Ethernet, SLL, SLL2, raw IP) into PacketBatch columns."""
