#!/bin/bash
# P1ha's floor: the server work of a cold `pulumi up` with ha.manager patroni, as a
# plain script (why this is P1ha's baseline: bench/cold_up_ha.py). bench/cold_up_ha.py
# renders every file first (etcd.conf.yml, patroni.yml, haproxy.cfg, pgbackrest.conf,
# pgbouncer.ini, the SQL; addresses and paths in WORK/conf/ha.env) with the platform's
# renderers and runs this as the postgres OS user:
#   bench/baseline_up_ha.sh WORK
# The daemons stay running; their pids are in WORK/pids for the caller to stop.
set -euo pipefail
W=$1
C=$W/conf
# shellcheck source=/dev/null
. "$C/ha.env"
PIDS=$W/pids
TLS=(--cacert "$CA" --cert "$CERT" --key "$KEY")
PGBR=(pgbackrest "--config=$PGBR_CONF" "--stanza=$STANZA")

start() {  # start NAME CMD...: detached, a clean environment, output to PIDS/NAME.log
    local name=$1
    shift
    setsid env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME="$HOME" USER="$USER" \
        "$@" </dev/null >"$PIDS/$name.log" 2>&1 &
    echo $! >"$PIDS/$name.pid"
}

wait_for() {  # wait_for WHAT CMD...: poll CMD every 0.1 s, for up to 3 minutes
    local what=$1 i
    shift
    for ((i = 0; i < 1800; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    echo "baseline_up_ha.sh: $what not reached" >&2
    return 1
}

etcd_healthy() {
    local u
    for u in "${ETCD_URLS[@]}"; do
        curl -sf "${TLS[@]}" "$u/health" | grep -q '"health":"true"' || return 1
    done
}

leader() {  # sets L to the index of the node whose Patroni answers 200 on /primary
    local i
    for i in "${!REST_URLS[@]}"; do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" \
                "${REST_URLS[$i]}/primary") == 200 ]]; then
            L=$i
            return 0
        fi
    done
    return 1
}

on_leader() {  # psql as break-glass, by peer on the leader's socket
    psql -X -q -v ON_ERROR_STOP=1 -h "${SOCKETS[$L]}" -p "$PGPORT" -U "$BREAK_GLASS" \
        -d postgres "$@"
}

routed() {  # HAProxy has checked every node and has exactly one up for read-write
    echo "show stat" | socat - "UNIX-CONNECT:$HAPROXY_SOCK" 2>/dev/null | awk -F, '
        $1 == "primary" && $2 != "FRONTEND" && $2 != "BACKEND" {
            n++; if ($18 ~ /^UP/) up++; if ($37 == "" || $37 ~ /INI/) fresh++ }
        END { exit !(n > 0 && up == 1 && fresh == 0) }'
}

streaming() {  # every other node streams from the leader
    [[ $(on_leader -At -c "SELECT count(*) FROM pg_stat_replication
                           WHERE state = 'streaming'") == $((${#REST_URLS[@]} - 1)) ]]
}

for i in "${!ETCD_CONFS[@]}"; do
    start "etcd-$((i + 1))" /usr/bin/etcd --config-file "${ETCD_CONFS[$i]}"
done
wait_for "etcd healthy" etcd_healthy

# Every node at once: one wins the initialize key and bootstraps, the others clone it.
for i in "${!PATRONI_YMLS[@]}"; do
    start "pg-$((i + 1))" /usr/bin/patroni "${PATRONI_YMLS[$i]}"
done
wait_for "a Patroni leader" leader

on_leader -f "$C/setup.sql" >/dev/null
"${PGBR[@]}" stanza-create
"${PGBR[@]}" backup --type=full --start-fast

start haproxy /usr/sbin/haproxy -db -f "$HAPROXY_CFG"
wait_for "HAProxy routing to the leader" routed
pgbouncer -d "$PGBOUNCER_INI" >/dev/null
PGPASSFILE=$W/secrets/owner.pgpass psql -X -q -v ON_ERROR_STOP=1 -h "$HAPROXY_HOST" \
    -p "$HAPROXY_PORT" -U "$OWNER" -d "$DATABASE" -f "$C/platform.sql" >/dev/null

wait_for "streaming replicas" streaming
