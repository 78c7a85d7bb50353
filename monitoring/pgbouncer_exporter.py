#!/usr/bin/python3
"""Start Debian's prometheus-pgbouncer-exporter against PgBouncer 1.8 or newer.

Debian bookworm's exporter (1.7) reads the SHOW STATS column `total_requests`,
which PgBouncer removed in 1.8, so against bookworm's own PgBouncer (1.18) it
fails before serving anything. This launcher runs the packaged exporter
unchanged except for its column tables: SHOW STATS is read by the columns
PgBouncer has now, and SHOW POOLS also yields server-side counts and maxwait,
which saturation alerts need. It is run by the system Python, where Debian
installed the exporter; every flag is the exporter's own.
"""

import sys

from prometheus_pgbouncer_exporter import cli, collectors

collectors.StatsCollector.metrics = {
    "total_xact_count": ("transactions_total", "Transactions pooled by PgBouncer"),
    "total_query_count": ("queries_total", "SQL queries pooled by PgBouncer"),
    "total_received": ("received_bytes_total", "Network traffic received by PgBouncer"),
    "total_sent": ("sent_bytes_total", "Network traffic sent by PgBouncer"),
    "total_query_time": ("query_microseconds_total",
                         "Microseconds spent by PgBouncer actively connected to PostgreSQL"),
    "total_wait_time": ("wait_microseconds_total",
                        "Microseconds clients spent waiting for a server connection"),
}
collectors.PoolsCollector.metrics = {
    **collectors.PoolsCollector.metrics,
    "sv_active": ("active_servers", "Server connections linked to a client"),
    "sv_idle": ("idle_servers", "Server connections idle and ready for a client"),
    "maxwait": ("max_wait_seconds", "How long the oldest waiting client has waited"),
}

if __name__ == "__main__":
    sys.exit(cli.main())
