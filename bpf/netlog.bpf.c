// SPDX-License-Identifier: GPL-2.0
/* tc ingress/egress programs: one record per TCP/UDP packet into a ring
 * buffer, a capture filter held in maps, per-flow counts of what the ring lost.
 * Traffic is never changed: every path returns TC_ACT_UNSPEC (== TCX_NEXT),
 * so programs attached after ours (clsact or tcx) still run. */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "netlog.h"

char LICENSE[] SEC("license") = "GPL";

_Static_assert(__builtin_offsetof(struct netlog_rec, saddr) == NETLOG_REC_HEAD, "netlog_rec4 shares this head");

/* Set by user space before load (the only .rodata variable). */
const volatile struct netlog_config cfg = {.snaplen = 1024, .filtered = 1};

/* One ring buffer per CPU, created by user space (which sets both sizes): a ring shared by
 * all CPUs made every record move its lock, producer position and header lines between them
 * (under iperf3: 650 -> 450 ns per program run with a ring per CPU). */
struct ring_per_cpu {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct ring_per_cpu);
} rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct netlog_flow_key);
	__type(value, struct netlog_flow_val);
} lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct netlog_flow_key);
	__type(value, __u32); /* NETLOG_QUIET_* */
} quiet SEC(".maps");

/* Versions of `quiet` (NETLOG_QUIET_GEN_*): the SYNs that removed entries (here), the changes
 * user space made; both only grow, so their sum changes whenever the table may have. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} quiet_gen SEC(".maps");

/* Per CPU: the last flow looked up in `quiet`, its verdict and the version it was read at.
 * Bulk transfers come as runs of one flow's packets: a 48-byte compare instead of a hash. */
struct quiet_memo {
	struct netlog_flow_key k;
	__u64 gen;
	__u32 quiet;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct quiet_memo);
} quiet_memo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NETLOG_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct netlog_filter);
} filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct netlog_lpm_key);
	__type(value, __u64);
} filter_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} filter_port SEC(".maps");

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

/* Window scale option of a SYN; -1 when absent. Reads (kind, len) pairs
 * from the skb: variable offsets into a stack copy upset the verifier. */
/* Global (verified once, on its own): keeps the verifier's state count low. */
__noinline int syn_wscale(struct __sk_buff *skb, __u32 off, __u32 optlen)
{
	__u32 i = 0;

	for (int n = 0; n < 20; n++) {
		__u8 kl[3];
		if (i >= optlen)
			break;
		if (bpf_skb_load_bytes(skb, off + i, kl, 1) || kl[0] == 0)
			break;
		if (kl[0] == 1) {
			i++;
			continue;
		}
		if (i + 2 > optlen || bpf_skb_load_bytes(skb, off + i, kl, 2) || kl[1] < 2)
			break;
		if (kl[0] == 3 && kl[1] == 3) {
			if (i + 3 > optlen || bpf_skb_load_bytes(skb, off + i, kl, 3))
				break;
			return kl[2];
		}
		i += kl[1];
	}
	return -1;
}

/* Record fields from an IPv4 header (addresses as ::ffff:a.b.c.d), an IPv6 header, a TCP
 * header: the bytes come from the skb's data (parse_direct) or a copy of them (parse). */
static __always_inline void put_ipv4(struct netlog_rec *h, const __u8 *ip)
{
	h->ip_version = 4;
	h->saddr[10] = 0xff;
	h->saddr[11] = 0xff;
	h->daddr[10] = 0xff;
	h->daddr[11] = 0xff;
	__builtin_memcpy(&h->saddr[12], &ip[12], 4);
	__builtin_memcpy(&h->daddr[12], &ip[16], 4);
}

static __always_inline void put_ipv6(struct netlog_rec *h, const __u8 *ip6)
{
	h->ip_version = 6;
	__builtin_memcpy(h->saddr, &ip6[8], 16);
	__builtin_memcpy(h->daddr, &ip6[24], 16);
}

static __always_inline void put_tcp(struct netlog_rec *h, const __u8 *th)
{
	h->sport = (__u16)th[0] << 8 | th[1];
	h->dport = (__u16)th[2] << 8 | th[3];
	h->seq = (__u32)th[4] << 24 | (__u32)th[5] << 16 | (__u32)th[6] << 8 | th[7];
	h->ack = (__u32)th[8] << 24 | (__u32)th[9] << 16 | (__u32)th[10] << 8 | th[11];
	h->flags = th[13];
	h->win = (__u16)th[14] << 8 | th[15];
	h->proto = IPPROTO_TCP;
}

/* Parse L3/L4 into h; returns the payload offset or -1 to skip the packet. Every case
 * parse_direct() leaves: VLAN tags, IP options, IPv6 extension headers, a SYN's options,
 * headers beyond the linear data, L3 devices. Global, like syn_wscale. */
__noinline int parse(struct __sk_buff *skb, struct netlog_rec *h, int l3)
{
	__u32 off = 0, l4len = 0, l4off;
	__u16 eproto = bpf_ntohs(skb->protocol);
	__u8 nh;

	if (!h)
		return -1;
	if (!l3) {
		struct ethhdr eth;
		if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
			return -1;
		eproto = bpf_ntohs(eth.h_proto);
		off = sizeof(eth);
#pragma unroll
		for (int i = 0; i < 2; i++) {
			if (eproto != ETH_P_8021Q_ && eproto != ETH_P_8021AD_)
				break;
			__u16 tag[2];
			if (bpf_skb_load_bytes(skb, off, tag, sizeof(tag)))
				return -1;
			eproto = bpf_ntohs(tag[1]);
			off += 4;
		}
	}

	if (eproto == ETH_P_IP_) {
		__u8 ip[20];
		if (bpf_skb_load_bytes(skb, off, ip, sizeof(ip)))
			return -1;
		__u32 ihl = (ip[0] & 0x0f) * 4;
		if ((ip[0] >> 4) != 4 || ihl < 20)
			return -1;
		if (((ip[6] & 0x1f) << 8 | ip[7]) != 0)
			return -1; /* later fragment: no L4 header */
		__u32 tot = (__u32)ip[2] << 8 | ip[3];
		l4len = tot ? (tot > ihl ? tot - ihl : 0) : skb->len - off - ihl;
		nh = ip[9];
		put_ipv4(h, ip);
		l4off = off + ihl;
	} else if (eproto == ETH_P_IPV6_) {
		__u8 ip6[40];
		if (bpf_skb_load_bytes(skb, off, ip6, sizeof(ip6)))
			return -1;
		__u32 plen = (__u32)ip6[4] << 8 | ip6[5];
		nh = ip6[6];
		put_ipv6(h, ip6);
		l4off = off + 40;
		l4len = plen ? plen : skb->len - l4off;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			__u8 ext[8];
			__u32 elen;
			if (nh != 0 && nh != 43 && nh != 60 && nh != 44 && nh != 51)
				break;
			if (bpf_skb_load_bytes(skb, l4off, ext, sizeof(ext)))
				return -1;
			if (nh == 44) {
				if (((ext[2] << 8 | ext[3]) & 0xfff8) != 0)
					return -1;
				elen = 8;
			} else if (nh == 51) {
				elen = ((__u32)ext[1] + 2) * 4;
			} else {
				elen = ((__u32)ext[1] + 1) * 8;
			}
			nh = ext[0];
			l4off += elen;
			l4len = l4len > elen ? l4len - elen : 0;
		}
	} else {
		return -1;
	}

	if (nh == IPPROTO_TCP) {
		__u8 th[20];
		if (bpf_skb_load_bytes(skb, l4off, th, sizeof(th)))
			return -1;
		__u32 doff = (th[12] >> 4) * 4;
		if (doff < 20)
			return -1;
		put_tcp(h, th);
		if ((th[13] & 0x02) && doff > 20)
			h->wscale = (__s8)syn_wscale(skb, l4off + 20, doff - 20);
		h->payload_len = l4len > doff ? l4len - doff : 0;
		return l4off + doff;
	}
	if (nh == IPPROTO_UDP) {
		__u16 uh[4];
		if (bpf_skb_load_bytes(skb, l4off, uh, sizeof(uh)))
			return -1;
		h->sport = bpf_ntohs(uh[0]);
		h->dport = bpf_ntohs(uh[1]);
		h->proto = IPPROTO_UDP;
		h->payload_len = l4len > 8 ? l4len - 8 : 0;
		return l4off + 8;
	}
	return -1;
}

/* Global, like syn_wscale; h may be NULL as far as the verifier knows. */
__noinline int filter_pass(struct netlog_rec *h)
{
	__u32 zero = 0;
	struct netlog_filter *f = bpf_map_lookup_elem(&filter, &zero);
	__u64 t, s = 0, d = 0, *v;

	if (!h || !f || !f->enabled)
		return 1;
	t = h->proto == IPPROTO_TCP ? f->m_tcp : f->m_udp;
	t |= h->ip_version == 4 ? f->m_ip4 : f->m_ip6;
	if (f->use_addr) {
		struct netlog_lpm_key k = {.prefixlen = 128};
		__builtin_memcpy(k.addr, h->saddr, 16);
		v = bpf_map_lookup_elem(&filter_addr, &k);
		s = v ? *v : 0;
		__builtin_memcpy(k.addr, h->daddr, 16);
		v = bpf_map_lookup_elem(&filter_addr, &k);
		d = v ? *v : 0;
		t |= (s & f->m_src_addr) | (d & f->m_dst_addr) | ((s | d) & f->m_any_addr);
	}
	if (f->use_port) {
		__u32 p = h->sport;
		v = bpf_map_lookup_elem(&filter_port, &p);
		s = v ? *v : 0;
		p = h->dport;
		v = bpf_map_lookup_elem(&filter_port, &p);
		d = v ? *v : 0;
		t |= (s & f->m_src_port) | (d & f->m_dst_port) | ((s | d) & f->m_any_port);
	}
	for (int i = 0; i < NETLOG_MAX_CLAUSES; i++) {
		if (i >= f->nclauses)
			break;
		__u64 pos = f->clauses[i].pos, neg = f->clauses[i].neg;
		if ((t & pos) == pos && (t & neg) == 0)
			return 1;
	}
	return 0;
}

static __always_inline void flow_key(struct netlog_flow_key *k, struct netlog_rec *h)
{
	k->ifindex = h->ifindex;
	k->netns_id = h->netns_id;
	__builtin_memcpy(k->saddr, h->saddr, 16);
	__builtin_memcpy(k->daddr, h->daddr, 16);
	k->sport = h->sport;
	k->dport = h->dport;
	k->proto = h->proto;
	k->direction = h->direction;
}

static __always_inline __u64 quiet_version(void)
{
	__u32 syn = NETLOG_QUIET_GEN_SYN, user = NETLOG_QUIET_GEN_USER;
	__u64 *a = bpf_map_lookup_elem(&quiet_gen, &syn), *b = bpf_map_lookup_elem(&quiet_gen, &user);

	return (a ? *a : 0) + (b ? *b : 0);
}

static __always_inline bool same_flow(const struct netlog_flow_key *a, const struct netlog_flow_key *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

#pragma unroll
	for (int i = 0; i < sizeof(*a) / 4; i++)
		if (x[i] != y[i])
			return false;
	return true;
}

/* Whether user space asked for headers only on this flow (see quiet_memo). */
static __always_inline bool is_quiet(struct netlog_flow_key *k)
{
	__u32 zero = 0;
	struct quiet_memo *m = bpf_map_lookup_elem(&quiet_memo, &zero);
	__u64 gen = quiet_version();

	if (!m)
		return bpf_map_lookup_elem(&quiet, k) != NULL;
	if (m->gen == gen && same_flow(&m->k, k))
		return m->quiet;
	m->quiet = bpf_map_lookup_elem(&quiet, k) != NULL;
	__builtin_memcpy(&m->k, k, sizeof(*k));
	m->gen = gen;
	return m->quiet;
}

/* A record the ring had no room for: counted for its flow, so totals stay exact. */
static __always_inline void count_lost(struct netlog_flow_key *k, struct netlog_rec *h)
{
	struct netlog_flow_val *v;

	stat_inc(NETLOG_STAT_RING_DROP);
	v = bpf_map_lookup_elem(&lost, k);
	if (!v) {
		struct netlog_flow_val z = {};
		bpf_map_update_elem(&lost, k, &z, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&lost, k);
		if (!v)
			return;
	}
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, h->wire_len);
	__sync_fetch_and_add(&v->payload_bytes, h->payload_len);
	__sync_fetch_and_add(&v->segs, h->gso_segs);
}

/* Reserve a record of HSIZE header bytes + CLASS payload bytes in this CPU's ring; PUT_HEAD
 * writes the header, then up to CLASS payload bytes are copied after it. */
#define EMIT_AS(HSIZE, PUT_HEAD, CLASS)                                         \
	do {                                                                    \
		rec = bpf_ringbuf_reserve(ring, (HSIZE) + (CLASS), 0);          \
		if (!rec)                                                       \
			goto drop;                                              \
		PUT_HEAD;                                                       \
		if ((CLASS) > 0) {                                              \
			/* cap is in [1, CLASS] here; the mask proves it */     \
			__u64 n = (((__u64)cap - 1) & ((CLASS) - 1)) + 1;       \
			if (bpf_skb_load_bytes(skb, poff, rec + (HSIZE), n))    \
				((struct netlog_rec *)rec)->payload_cap = 0;    \
		}                                                               \
		bpf_ringbuf_submit(rec, 0);                                     \
		return TC_ACT_UNSPEC;                                           \
	} while (0)

/* The record of h in its layout: IPv4 (56 bytes, its addresses' last 4 bytes) or IPv6 (80). */
#define EMIT(CLASS)                                                             \
	do {                                                                    \
		if (h.ip_version == 4)                                          \
			EMIT_AS(sizeof(struct netlog_rec4), put_rec4(rec, &h), CLASS); \
		else                                                            \
			EMIT_AS(sizeof(h), __builtin_memcpy(rec, &h, sizeof(h)), CLASS); \
	} while (0)

static __always_inline void put_rec4(struct netlog_rec4 *r, const struct netlog_rec *h)
{
	__builtin_memcpy(r->head, h, NETLOG_REC_HEAD);
	__builtin_memcpy(r->saddr, &h->saddr[12], 4);
	__builtin_memcpy(r->daddr, &h->daddr[12], 4);
}

/* Fast path of parse(): IPv4 (no options) or IPv6 (no extension headers) then TCP or UDP,
 * read straight from the skb's linear data, where tc nearly always finds the headers. Saves
 * parse()'s bpf_skb_load_bytes calls (ACK or data record: ~220 -> ~180 ns per run).
 * -2: not that case (VLAN, options, a SYN's window scale, headers not linear...), nothing
 * written: parse() decides. */
static __always_inline int parse_direct(struct __sk_buff *skb, struct netlog_rec *h)
{
	__u8 *data = (__u8 *)(long)skb->data, *end = (__u8 *)(long)skb->data_end;
	__u8 *ip = data + ETH_HLEN, *l4;
	__u32 iplen, l4len, hlen, doff = 0;
	__u8 v4, nh;

	if (ip + 20 > end)
		return -2;
	if (data[12] == 0x08 && data[13] == 0x00) {
		if (ip[0] != 0x45 || ((ip[6] & 0x1f) | ip[7]) != 0)
			return -2;
		v4 = 1, iplen = 20, nh = ip[9];
		l4len = (__u32)ip[2] << 8 | ip[3];
		if (l4len < 20)
			return -2; /* 0: a GSO packet beyond 64 KB */
		l4len -= 20;
	} else if (data[12] == 0x86 && data[13] == 0xdd) {
		v4 = 0, iplen = 40, nh = ip[6];
		l4len = (__u32)ip[4] << 8 | ip[5];
		if (!l4len)
			return -2; /* jumbogram */
	} else {
		return -2;
	}
	l4 = ip + iplen;
	if (l4 + 20 > end) /* a TCP header's worth, for UDP too (shorter datagrams: parse()) */
		return -2;
	if (nh == IPPROTO_TCP) {
		doff = (l4[12] >> 4) * 4;
		if (doff < 20 || ((l4[13] & 0x02) && doff > 20))
			return -2; /* bad, or a SYN with options: parse() reads its window scale */
		hlen = doff;
	} else if (nh == IPPROTO_UDP) {
		hlen = 8;
	} else {
		return -2;
	}
	if (v4)
		put_ipv4(h, ip);
	else
		put_ipv6(h, ip);
	if (nh == IPPROTO_TCP) {
		put_tcp(h, l4);
	} else {
		h->sport = (__u16)l4[0] << 8 | l4[1];
		h->dport = (__u16)l4[2] << 8 | l4[3];
		h->proto = IPPROTO_UDP;
	}
	h->payload_len = l4len > hlen ? l4len - hlen : 0;
	return ETH_HLEN + iplen + hlen;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir, bool l3)
{
	struct netlog_rec h = {};
	void *rec;
	struct netlog_flow_key k = {};
	bool quiet_flow = false;
	__u32 cap = 0, cpu;
	void *ring;
	long poff;

	h.wscale = -1;
	poff = l3 ? -2 : parse_direct(skb, &h);
	if (poff == -2)
		poff = parse(skb, &h, l3);
	if (poff < 0) {
		stat_inc(NETLOG_STAT_SKIPPED);
		return TC_ACT_UNSPEC;
	}
	/* the filter reads parsed fields only: packets it rejects skip the clock and the skb reads */
	if (cfg.filtered && !filter_pass(&h)) {
		stat_inc(NETLOG_STAT_FILTERED);
		return TC_ACT_UNSPEC;
	}
	h.ts_ns = bpf_ktime_get_ns();
	h.ifindex = skb->ifindex;
	h.netns_id = cfg.netns_id;
	h.wire_len = skb->len;
	h.gso_segs = skb->gso_segs ? skb->gso_segs : 1;
	h.direction = dir;
	flow_key(&k, &h);

	if (h.proto == IPPROTO_TCP && (h.flags & 0x02)) {
		/* a new connection may speak anything: payload again, both directions */
		bool gone = bpf_map_delete_elem(&quiet, &k) == 0;
		k.direction = NETLOG_DIR_INGRESS + NETLOG_DIR_EGRESS - k.direction;
		gone |= bpf_map_delete_elem(&quiet, &k) == 0;
		k.direction = h.direction;
		if (gone) { /* every CPU's memo of these flows is stale now */
			__u32 syn = NETLOG_QUIET_GEN_SYN;
			__u64 *g = bpf_map_lookup_elem(&quiet_gen, &syn);
			if (g)
				__sync_fetch_and_add(g, 1);
		}
	} else if (h.payload_len && is_quiet(&k)) {
		quiet_flow = true;
		stat_inc(NETLOG_STAT_QUIET);
	}
	if (!quiet_flow && h.payload_len && skb->len > poff) {
		cap = h.payload_len;
		if (cap > skb->len - poff)
			cap = skb->len - poff;
		if (cap > cfg.snaplen)
			cap = cfg.snaplen;
		if (cap > NETLOG_MAX_SNAPLEN)
			cap = NETLOG_MAX_SNAPLEN;
	}
	cpu = bpf_get_smp_processor_id();
	ring = bpf_map_lookup_elem(&rings, &cpu);
	if (!ring)
		goto drop;
	/* A ring over half full keeps its room for headers: a new bulk flow copies payload until
	 * user space finds it quiet (~0.3 s; at 480k packets/s of 1 KB copies that overflowed the
	 * rings), and L4 needs every record where L7 can resync after a gap. */
	if (cap && bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) > bpf_ringbuf_query(ring, BPF_RB_RING_SIZE) / 2) {
		cap = 0;
		stat_inc(NETLOG_STAT_SHED);
	}
	h.payload_cap = cap;
	if (cap == 0)
		EMIT(0);
	else if (cap <= 64)
		EMIT(64);
	else if (cap <= 128)
		EMIT(128);
	else if (cap <= 256)
		EMIT(256);
	else if (cap <= 512)
		EMIT(512);
	else if (cap <= 1024)
		EMIT(1024);
	else if (cap <= 2048)
		EMIT(2048);
	else
		EMIT(4096);
drop:
	count_lost(&k, &h);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int netlog_ingress(struct __sk_buff *skb) { return handle(skb, NETLOG_DIR_INGRESS, false); }

SEC("tc")
int netlog_egress(struct __sk_buff *skb) { return handle(skb, NETLOG_DIR_EGRESS, false); }

/* For devices without a link-layer header (tun, wireguard, ipip). */
SEC("tc")
int netlog_in_l3(struct __sk_buff *skb) { return handle(skb, NETLOG_DIR_INGRESS, true); }

SEC("tc")
int netlog_eg_l3(struct __sk_buff *skb) { return handle(skb, NETLOG_DIR_EGRESS, true); }
