#!/usr/bin/env bash
# Installs (when missing) and starts, on loopback only, the scale-out stack the PostgreSQL pass needs:
# Debian's PostgreSQL with an `aicp` role (CREATEDB, for pytest-django's test database) and database,
# and redis-server. Idempotent: safe to run again while they are up.
#
# Progress goes to stderr; stdout is two `export` lines for the caller to eval:
#   eval "$(bash .ci/services.sh)"   →   AICP_PG_TEST_URL, AICP_REDIS_TEST_URL
set -euo pipefail

log() { echo "[services] $*" >&2; }

PG_ROLE=aicp
PG_PASSWORD=aicp
PG_DATABASE=aicp
REDIS_PORT=6379

need=()
if ! command -v pg_ctlcluster >/dev/null || ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    need+=(postgresql)
fi
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    # Another installer (a browser for UI tests) may hold the dpkg lock: wait for it rather than fail.
    apt_opts=(-o DPkg::Lock::Timeout=600 -qq)
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >&2
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends "${need[@]}" >&2
fi

# --- PostgreSQL ---------------------------------------------------------------------------------------
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version main"; then
    log "creating PostgreSQL $version cluster main"
    pg_createcluster "$version" main >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
    log "starting PostgreSQL $version on 127.0.0.1:$port"
    pg_ctlcluster "$version" main start >&2
fi
for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$port" >&2

psql_admin() { runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE'")" != "1" ]; then
    log "creating role $PG_ROLE"
    psql_admin -c "CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" >&2
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'")" != "1" ]; then
    log "creating database $PG_DATABASE"
    psql_admin -c "CREATE DATABASE $PG_DATABASE OWNER $PG_ROLE" >&2
fi

# --- Redis --------------------------------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "starting redis-server on 127.0.0.1:$REDIS_PORT"
    redis-server --daemonize yes --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >&2
    for _ in $(seq 1 40); do
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.25
    done
fi
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >&2

echo "export AICP_PG_TEST_URL=postgresql://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$port/$PG_DATABASE"
echo "export AICP_REDIS_TEST_URL=redis://127.0.0.1:$REDIS_PORT/0"
