/* Shared by the BPF programs and user space (bpfnetlog/capture/ebpf/record.py
 * mirrors these layouts with numpy dtypes / ctypes; keep them in step). */
#ifndef NETLOG_H
#define NETLOG_H

#define NETLOG_MAX_SNAPLEN 4096 /* largest payload size class */
#define NETLOG_MAX_CLAUSES 32   /* conjunctive clauses of a compiled filter */

/* Load-time settings, the object's .rodata. */
struct netlog_config {
	__u32 snaplen;  /* payload bytes to copy, <= NETLOG_MAX_SNAPLEN */
	__u32 netns_id; /* user space's id of the namespace this copy serves */
	__u32 filtered; /* a capture filter is set: 0 lets the verifier drop the filter code */
};

/* One packet, as parsed; an IPv6 record in the ring. Addresses come last so an IPv4
 * record (netlog_rec4) can be this struct's first NETLOG_REC_HEAD bytes and 4-byte
 * addresses: 56 bytes, one 64-byte cache line with the ring's 8-byte header.
 * Each record is followed in the ring by `payload_cap` payload bytes (the reservation
 * is rounded up to a size class of 64 * 2^k bytes; user space reads only cap). */
struct netlog_rec {
	__u64 ts_ns;       /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 ifindex;
	__u32 netns_id;    /* set per namespace by user space (rodata) */
	__u32 wire_len;    /* skb->len: whole GSO super-packet on egress */
	__u32 payload_len; /* L4 payload length from the IP/UDP lengths */
	__u32 seq;
	__u32 ack;
	__u16 sport;       /* host byte order */
	__u16 dport;
	__u16 win;
	__u16 gso_segs;
	__u16 payload_cap; /* payload bytes that follow this header */
	__u8 direction;    /* NETLOG_DIR_* */
	__u8 proto;        /* 6 or 17 */
	__u8 ip_version;   /* 4 or 6: which of the two layouts this record has */
	__u8 flags;        /* TCP flags */
	__s8 wscale;       /* window scale option of a SYN, -1 if absent */
	__u8 _pad;
	__u8 saddr[16];    /* IPv4 as ::ffff:a.b.c.d (in netlog_rec4: the last 4 bytes only) */
	__u8 daddr[16];
};

#define NETLOG_REC_HEAD 48 /* offsetof(struct netlog_rec, saddr): the fields both layouts share */

/* An IPv4 packet's record in the ring. */
struct netlog_rec4 {
	__u8 head[NETLOG_REC_HEAD]; /* struct netlog_rec up to saddr */
	__u8 saddr[4];
	__u8 daddr[4];
};

#define NETLOG_DIR_INGRESS 1
#define NETLOG_DIR_EGRESS 2

/* Key of the per-flow maps (LRU hashes `lost` and `quiet`). */
struct netlog_flow_key {
	__u32 ifindex;
	__u32 netns_id;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 direction;
	__u8 _pad[2];
};

/* The packets of a flow whose records the ring had no room for (the `lost` map). With the
 * records user space got, they give each flow's exact totals; counting losses only keeps the
 * map off the path of every other packet (an LRU lookup and four atomic adds, ~130 ns). */
struct netlog_flow_val {
	__u64 packets;
	__u64 bytes;         /* sum of wire_len */
	__u64 payload_bytes; /* sum of payload_len */
	__u64 segs;          /* sum of gso_segs: wire packets after segmentation */
};

/* User space's verdict on one direction of a flow (the `quiet` map, same key as `lost`):
 * its payload is of no use (the L7 stage gave up on the connection), so records of it
 * carry headers only. A SYN removes the entry: a new connection may speak anything. */
#define NETLOG_QUIET_NO_PAYLOAD 1
/* Entries of `quiet_gen`, the table's version: SYN removals (kernel), changes by user space. */
#define NETLOG_QUIET_GEN_SYN 0
#define NETLOG_QUIET_GEN_USER 1

/* Filter: a disjunction of clauses; clause i holds when all `pos` atoms are
 * true and no `neg` atom is. The atom bit vector of a packet comes from the
 * address LPM trie, the port array and the protocol masks below. */
struct netlog_clause {
	__u64 pos;
	__u64 neg;
};

struct netlog_filter {
	__u32 enabled;      /* 0: capture everything */
	__u32 nclauses;
	__u32 use_addr;     /* look addresses up in the LPM trie */
	__u32 use_port;     /* look ports up in the port array */
	__u64 m_src_addr;   /* atoms about the source address only */
	__u64 m_dst_addr;
	__u64 m_any_addr;   /* atoms true if either address matches */
	__u64 m_src_port;
	__u64 m_dst_port;
	__u64 m_any_port;
	__u64 m_tcp;        /* atoms true for TCP packets */
	__u64 m_udp;
	__u64 m_ip4;
	__u64 m_ip6;
	struct netlog_clause clauses[NETLOG_MAX_CLAUSES];
};

struct netlog_lpm_key {
	__u32 prefixlen;    /* over the IPv4-mapped 128-bit address */
	__u8 addr[16];
};

/* Per-CPU counters, index into the `stats` array. Not counted here: packets seen and records
 * sent (user space counts the records it reads; two counter updates per packet were ~10% of a
 * program run). */
enum netlog_stat {
	NETLOG_STAT_SKIPPED = 0,  /* not TCP/UDP over IP, or a later fragment */
	NETLOG_STAT_FILTERED,     /* rejected by the capture filter */
	NETLOG_STAT_RING_DROP,    /* records lost: ring full */
	NETLOG_STAT_QUIET,        /* records sent without payload: the flow is quiet */
	NETLOG_STAT_SHED,         /* records sent without their payload: the ring was over half full */
	NETLOG_STAT_MAX,
};

#endif
