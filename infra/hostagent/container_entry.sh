#!/bin/bash
# pgp-entry: the command of a dev container whose server is a program that stays in the
# foreground (Patroni), run by tini as root:
#
#   bash container_entry.sh BUNDLE_DIR USER PRIVATE_DIR PROGRAM [ARGS...]
#
# 1. pgp-apply --files-only writes the bundle's files (patroni.yml, TLS, pgBackRest's
#    config) before the program reads them;
# 2. PRIVATE_DIR (Patroni's pgpass) is made USER's, 0700;
# 3. the bundle watcher (watch.py) runs in the background: it converges every new bundle
#    in place and writes the status file `pulumi up` waits for; in this container mode its
#    applier never starts or stops the program (infra/hostagent/patroni_step.py);
# 4. first_backup.py waits in the background until this node leads, then makes the
#    pgBackRest stanza and the first full backup, once for the cluster;
# 5. exec: the program replaces this shell as USER, so `docker stop`'s SIGTERM reaches it
#    through tini and Patroni shuts PostgreSQL down itself.
# Nothing here reads a secret: the files are the bundle's, written 0600 by pgp-apply.
set -euo pipefail
if [ "$#" -lt 4 ]; then
  echo "usage: container_entry.sh BUNDLE_DIR USER PRIVATE_DIR PROGRAM [ARGS...]" >&2
  exit 2
fi
dir=$1 user=$2 private=$3
shift 3
python3 "$dir/apply.py" --bundle-file "$dir/bundle.json" --files-only
install -d -o "$user" -g "$user" -m 0700 "$private"
python3 "$dir/watch.py" "$dir" &
python3 "$dir/first_backup.py" "$dir/bundle.json" &
exec runuser -u "$user" -- "$@"
