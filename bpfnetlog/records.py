"""The record contract: source names, field names and types of every table.

This module is the one place where user space spells the fields of
`bpf_net_l4_log`, `bpf_net_l7_log` and the packet series (see DESIGN.md,
"Records"). The store, the query language, the exports and the viewer all
read these schemas; nothing else lists field names.

Units: `time`, `start_time`, `end_time`, `ts` are nanoseconds since the
epoch; every duration and cost (`*_cost`, `tcp_rtt`, `duration`, `cost_*`,
`response_duration`) is in microseconds, as in DataKit.
"""

from __future__ import annotations

import pyarrow as pa

L4_SOURCE = "bpf_net_l4_log"
L7_SOURCE = "bpf_net_l7_log"
PACKET_TABLE = "bpf_net_packet"  # the L4 packet series, one row per packet
STATS_TABLE = "bpf_net_capture_stats"  # what each source read, skipped and lost

SOURCES = (L4_SOURCE, L7_SOURCE)

_str = pa.string()
_i64 = pa.int64()
_i32 = pa.int32()
_bool = pa.bool_()

# Tags shared by L4 and L7 records.
COMMON_FIELDS: list[tuple[str, pa.DataType]] = [
    ("time", _i64),
    ("host", _str),
    ("nic_name", _str),
    ("nic_mac", _str),
    ("ifindex", _i32),
    ("netns", _str),
    ("virtual_nic", _bool),
    ("host_network", _bool),
    ("src_ip", _str),
    ("dst_ip", _str),
    ("src_port", _i32),
    ("dst_port", _i32),
    ("l4_proto", _str),
    ("l7_proto", _str),
    ("direction", _str),  # outgoing | incoming | unknown
    ("conn_side", _str),  # client | server | unknown (role of src)
    ("client_ip", _str),
    ("client_port", _i32),
    ("server_ip", _str),
    ("server_port", _i32),
    ("k8s_namespace", _str),
    ("k8s_pod_name", _str),
    ("k8s_container_name", _str),
    ("src_k8s_namespace", _str),
    ("src_k8s_pod_name", _str),
    ("src_k8s_service_name", _str),
    ("dst_k8s_namespace", _str),
    ("dst_k8s_pod_name", _str),
    ("dst_k8s_service_name", _str),
    ("community_id", _str),
    ("conn_id", _str),
    ("nic_traceid", _str),
    ("status", _str),  # info | warning | error
]

# Packets, payload bytes and retransmissions sent (tx) and received (rx) by src.
TRAFFIC_FIELDS: list[tuple[str, pa.DataType]] = [
    ("tx_packets", _i64),
    ("rx_packets", _i64),
    ("tx_bytes", _i64),
    ("rx_bytes", _i64),
    ("tx_retrans", _i64),
    ("rx_retrans", _i64),
]

L4_FIELDS: list[tuple[str, pa.DataType]] = COMMON_FIELDS + [
    ("chunk_id", _i32),
    ("chunk_syn", _bool),
    ("chunk_fin", _bool),
    ("tcp_3whs_cost", _i64),
    ("tcp_4whs_cost", _i64),
    ("tcp_rtt", _i64),
    *TRAFFIC_FIELDS,
    ("tcp_syn_retrans", _i64),
    ("tx_rst", _i64),
    ("rx_rst", _i64),
    ("tx_zero_win", _i64),
    ("rx_zero_win", _i64),
    ("dup_ack", _i64),
    ("out_of_order", _i64),
    ("lost_segment", _i64),
    ("tx_seq_min", _i64),
    ("tx_seq_max", _i64),
    ("rx_seq_min", _i64),
    ("rx_seq_max", _i64),
    ("start_time", _i64),
    ("end_time", _i64),
    ("duration", _i64),
    ("conn_state", _str),
    ("history", _str),
    ("close_type", _str),  # fin | rst | timeout | open (still running at flush)
    ("packets", _i32),  # packets in this chunk (rows of the packet table)
    ("capture_drops", _i64),  # packets of this flow the capture lost (ring full)
]

L7_FIELDS: list[tuple[str, pa.DataType]] = COMMON_FIELDS + [
    ("l7_id", _str),
    ("http_method", _str),
    ("http_path", _str),
    ("http_status_code", _i32),
    ("http_host", _str),
    ("http_version", _str),
    ("http_user_agent", _str),
    ("request_type", _str),
    ("request_resource", _str),
    ("request_domain", _str),
    ("response_code", _i32),
    ("response_status", _str),  # ok | client_error | server_error | timeout | unknown
    ("pairing", _str),  # paired | no_response | no_request
    ("req_seq", _i64),
    ("resp_seq", _i64),
    ("l7_traceid", _str),
    ("trace_id", _str),
    ("parent_id", _str),
    ("span_id", _str),
    ("x_request_id", _str),
    ("cost_req_sent", _i64),
    ("cost_resp_wait", _i64),
    ("cost_cnt_dl", _i64),
    ("response_duration", _i64),
    ("request_length", _i64),
    ("response_length", _i64),
    *TRAFFIC_FIELDS,
    # header blocks as text: "Name: value" lines joined by "\n", non-printable bytes as \xNN,
    # secret values "[REDACTED]", <= 4096 chars (then "\n...[TRUNCATED]")
    ("req_headers", _str),
    ("resp_headers", _str),
    ("dns_query", _str),
    ("dns_qtype", _str),
    ("dns_rcode", _str),
    ("dns_answers", _str),  # comma separated
    ("redis_command", _str),
    ("sql_statement", _str),
    ("tls_sni", _str),
    ("grpc_method", _str),
]

PACKET_FIELDS: list[tuple[str, pa.DataType]] = [
    ("time", _i64),  # == ts; named time so every table sorts and filters alike
    ("host", _str),
    ("nic_name", _str),
    ("conn_id", _str),
    ("chunk_id", _i32),
    ("idx", _i32),  # position of the packet in its connection, from 0
    ("frame", _i64),  # frame number in the source (pcap: 1-based, as tshark)
    ("txrx", _str),  # tx: sent by src (local side); rx: received by src
    ("flags", _str),  # tcpdump style: S, S., ., P., F., R, R.; "" for UDP
    ("seq", _i64),
    ("ack_seq", _i64),
    ("payload_size", _i32),
    ("win", _i32),  # raw window field (not scaled)
    ("gso_segs", _i32),
    ("analysis", _str),  # comma separated: retransmission, fast_retransmission, ...
    ("rtt", _i64),  # us, on the ACK that acknowledged data; 0 otherwise
    ("l7_proto", _str),
    ("http_method", _str),
    ("http_path", _str),
    ("l7_id", _str),
]

# A run (one `bpfnetlog read` or `capture`) writes a row per source at its end; a live capture
# also at every flush, so a long or killed capture has them too. Counters are totals since the
# run started and only grow: the newest (largest) row of a run (`started`) is its total, never
# add a run's rows up.
STATS_FIELDS: list[tuple[str, pa.DataType]] = [
    ("time", _i64),
    ("started", _i64),  # when the run that wrote the row started (ns): its rows share it
    ("host", _str),
    ("source", _str),  # file name, or "ebpf" / "afpacket"
    ("packets", _i64),  # packets read from the source
    ("decoded", _i64),  # TCP/UDP packets that reached L4
    ("skipped", _i64),  # packets that are not TCP/UDP over IP (ARP, ICMP, ...)
    ("malformed", _i64),  # packets whose headers are cut or invalid
    ("dropped", _i64),  # packets the capture lost (ring full, kernel drops)
    ("headers_only", _i64),  # live: records sent without payload, their connection's L7 stage gave up
    ("payload_shed", _i64),  # live eBPF: records sent without payload, the ring was over half full
    ("errors", _str),  # human readable, e.g. "truncated record at byte 1234"
]

TABLE_FIELDS: dict[str, list[tuple[str, pa.DataType]]] = {
    L4_SOURCE: L4_FIELDS,
    L7_SOURCE: L7_FIELDS,
    PACKET_TABLE: PACKET_FIELDS,
    STATS_TABLE: STATS_FIELDS,
}

SCHEMAS: dict[str, pa.Schema] = {name: pa.schema(fields) for name, fields in TABLE_FIELDS.items()}

# Text whose values rarely repeat (ids): the store writes it without a Parquet dictionary, which
# would hash every value only to give up. Header blocks keep one: most lines repeat from message
# to message (2x faster, 8x smaller on bench/ingest's traffic), and Parquet drops a dictionary
# that outgrows its page limit by itself.
RARELY_REPEATED = frozenset({"l7_id", "l7_traceid", "request_resource", "trace_id", "span_id", "parent_id",
                             "x_request_id"})  # fmt: skip

