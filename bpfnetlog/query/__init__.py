"""The Lucene-like query language, compiled to parameterized SQL.

    source:bpf_net_l7_log AND http_status_code:>=500 AND NOT src_ip:10.0.0.0/8

See syntax.py for the grammar and compile.py for what each term means.
"""

from bpfnetlog.query.compile import compile_query
from bpfnetlog.query.errors import QueryError
from bpfnetlog.query.run import count_histogram, run_query
from bpfnetlog.query.timeparse import parse_time

__all__ = ["QueryError", "compile_query", "count_histogram", "parse_time", "run_query"]
