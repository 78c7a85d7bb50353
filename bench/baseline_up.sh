#!/bin/bash
# P1's baseline: the server work of a cold `pulumi up` of the local platform, as a
# plain script. bench/cold_up.py prepares the rendered files in WORK/conf (the same
# renderers the platform uses) and runs this as the postgres OS user:
#   bench/baseline_up.sh WORK PORT
set -euo pipefail
W=$1
PORT=$2
BIN=/usr/lib/postgresql/15/bin
C=$W/conf
export PGPASSFILE=$W/secrets/owner.pgpass
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U platform_owner)
PGBR=(pgbackrest "--config=$W/pgbackrest/pgbackrest.conf" --stanza=main)

"$BIN/initdb" -D "$W/primary" -U postgres "--pwfile=$C/pw" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 --data-checksums >/dev/null
cp "$C/primary.conf" "$W/primary/postgresql.conf"
cp "$C/pg_hba.conf" "$W/primary/pg_hba.conf"
cp "$C/pg_ident.conf" "$W/primary/pg_ident.conf"
"$BIN/pg_ctl" start -w -D "$W/primary" -l "$W/primary.log" >/dev/null
# Break-glass by peer on the socket (pg_ident's map), as the platform's bootstrap step.
psql -X -q -v ON_ERROR_STOP=1 -h "$W/run" -p "$PORT" -U postgres -d postgres \
    -f "$C/setup.sql" >/dev/null

"${PGBR[@]}" stanza-create
"${PGBR[@]}" backup --type=full --start-fast

for i in 1 2; do
    R=$W/replica-$i
    PGPASSFILE=$W/secrets/replica-$i.pgpass "$BIN/pg_basebackup" -D "$R" -w -X stream \
        -c fast -C -S "replica_$i" \
        -d "host=127.0.0.1 port=$PORT user=replicator application_name=replica_$i"
    cp "$C/replica-$i.conf" "$R/postgresql.conf"
    cp "$C/pg_hba.conf" "$R/pg_hba.conf"
    : >"$R/postgresql.auto.conf"
    : >"$R/standby.signal"
    # As the platform does: the WAL receiver finds the password in its environment.
    PGPASSWORD=$(<"$C/repl_pw") "$BIN/pg_ctl" start -w -D "$R" -l "$W/replica-$i.log" >/dev/null
done

pgbouncer -d "$W/pgbouncer/pgbouncer.ini" >/dev/null
"${PSQL[@]}" -d platform -f "$C/platform.sql" >/dev/null
