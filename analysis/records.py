"""The run folder's data contract: file names and CSV columns.

Written by the recorder inside Locust, read by `analysis/`. A run folder made on another
machine or by a worker process follows the same contract, so it analyses the same way.
"""

# The values of the "region" and "endpoint" columns. A region's real host is in `loadtest.api.REGIONS`.
REGIONS = ("us", "uk", "eu", "self-serve")
ENDPOINTS = ("create", "respond", "close")

REQUESTS_CSV = "requests.csv"
# Distributed runs: every worker writes its own file, merged by the analysis.
REQUESTS_GLOB = "requests*.csv"
CONVERSATIONS_CSV = "conversations.csv"
CONVERSATIONS_GLOB = "conversations*.csv"
ARRIVALS_CSV = "arrivals.csv"  # open model only
ARRIVALS_GLOB = "arrivals*.csv"
CONNECTIONS_CSV = "connections.csv"  # HTTPS targets only
CONNECTIONS_GLOB = "connections*.csv"
RUN_JSON = "run.json"
LOCUST_CSV_PREFIX = "locust"  # → locust_stats.csv, locust_stats_history.csv, locust_failures.csv
REPORT_HTML = "report.html"

# One row per request, in this order.
REQUEST_COLUMNS = (
    "timestamp",  # request start, Unix epoch seconds (float)
    "region",
    "variant",  # empty when none
    "endpoint",  # create | respond | close
    "name",  # the name in Locust's stats, e.g. "uk · a · respond"
    "response_time_ms",  # float, microsecond precision
    "status",  # HTTP status, 0 when no response
    "ok",  # 1 success, 0 failure
    "error_kind",  # empty, or one of ERROR_KINDS
    "error",  # short message, never a secret
    "bytes",  # response body length
    "conversation_id",  # empty when create failed
    "turn",  # 0 create, 1..N respond, N+1 close
    "user",
    "worker",
)

# Why a request failed. "http": an error status; "rate_limited": 429; "timeout": no answer
# within the client timeout; "connection": refused/reset; "schema": a 200 whose body breaks
# the documented shape (malformed JSON included); "other": anything else.
ERROR_KINDS = ("http", "rate_limited", "timeout", "connection", "schema", "other")

# One row per conversation.
CONVERSATION_COLUMNS = (
    "conversation_id",
    "region",
    "variant",
    "started",
    "ended",
    "duration_s",
    "turns",
    "ended_by",
    "ok",
)
ENDED_BY = ("end_conversation", "handoff", "max_turns", "stopped", "error")
# Cut by the end of the test (and still closed): neither a success nor a failure. Conversation
# success rates are over finished conversations: succeeded / (all - stopped).
UNFINISHED = "stopped"

# Open model (--arrival-rate): one row per planned conversation. `started` and `lag_ms`
# (start minus plan) are empty and `dropped` is 1 when no user was free to start it; `reason`
# says why (all users busy, or the pool not ready yet).
ARRIVAL_COLUMNS = ("planned", "region", "variant", "started", "lag_ms", "dropped", "reason")

# HTTPS targets: one row per new TLS connection, written when the request that opened it
# ended (that request's latency in requests.csv includes this handshake). With --connections per-conversation that
# is every conversation's create; per-user, about one per user.
CONNECTION_COLUMNS = ("timestamp", "region", "endpoint", "conversation_id", "turn", "user", "worker", "tls_handshake_ms")


def complete_rows(data: bytes) -> int:
    """Length of the prefix of ``data`` that holds only complete CSV rows.

    ``data`` starts at a row boundary (a file's start or a previous cut). A row ends at a
    line end outside quotes: an ``error`` field may hold quoted line ends, and a file still
    being written ends in a partial row. Readers of a growing run (the web UI's download,
    `loadtest.runtail` for the capacity search and the live SLO verdict) cut here so they
    never hand on half a row.
    """
    cut = data.rfind(b"\n") + 1
    odd = data.count(b'"', 0, cut) % 2  # inside a quoted field at ``cut``
    while cut and odd:
        start = data.rfind(b"\n", 0, cut - 1) + 1
        odd ^= data.count(b'"', start, cut) % 2
        cut = start
    return cut
