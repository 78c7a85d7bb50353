# Source this file to use `pulumi` by hand with the same offline settings as the
# Makefile:  . scripts/env.sh
_pgp_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
export PATH="$_pgp_root/.tools/bin:$_pgp_root/.venv/bin:$PATH"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_HOME="$_pgp_root/.state/pulumi-home"
export PULUMI_BACKEND_URL="file://$_pgp_root/.state/backend"
export PULUMI_CONFIG_PASSPHRASE_FILE="$_pgp_root/.state/passphrase"
export GRPC_ENABLE_FORK_SUPPORT=false
unset _pgp_root
