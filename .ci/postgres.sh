# shellcheck shell=bash
# .ci/postgres.sh — a real PostgreSQL server for the nimbus-registry tests.
#
# Source it from .ci/run (as root, on Debian 12):
#
#     source .ci/postgres.sh || exit 1
#
# It installs Debian's `postgresql` package if needed, creates and starts the
# cluster if it is not running, creates (or resets) a login role and a database, and
# exports
#
#     NIMBUS_TEST_POSTGRES_URL=postgres://nimbus:…@127.0.0.1:PORT/nimbus_test
#
# which the PostgreSQL half of the registry's behavioural suite reads (without it
# those tests print "SKIPPED: …" and pass). Idempotent: sourcing it again, or on a
# machine where PostgreSQL is already installed or running, is fine. Being sourced,
# it never exits the caller's shell and does not change its shell options: on failure
# it prints why and returns non-zero.

nimbus_pg_setup() {
    local role=nimbus password=nimbus_ci_password db=nimbus_test
    local sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo_cmd=(sudo)
        else
            echo "postgres.sh: needs root (or sudo) to install and start PostgreSQL" >&2
            return 1
        fi
    fi

    # 1. Install the server from Debian's packages unless it is there already.
    if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "postgres.sh: installing PostgreSQL from Debian's packages"
        local tries
        for tries in 1 2 3; do
            if "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
                && "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                    -o Dpkg::Options::=--force-confold postgresql >/dev/null; then
                break
            fi
            if [ "$tries" = 3 ]; then
                echo "postgres.sh: apt-get install postgresql failed" >&2
                return 1
            fi
            sleep 5
        done
    fi

    local version=""
    version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1) || true
    if [ -z "$version" ]; then
        echo "postgres.sh: no PostgreSQL version found under /usr/lib/postgresql" >&2
        return 1
    fi

    # 2. Create the cluster if the package did not (or it was removed), then start it.
    if ! pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
        echo "postgres.sh: creating cluster $version/main"
        "${sudo_cmd[@]}" pg_createcluster "$version" main >/dev/null || {
            echo "postgres.sh: pg_createcluster failed" >&2
            return 1
        }
    fi
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 ~ /online/ { found = 1 } END { exit !found }'; then
        echo "postgres.sh: starting cluster $version/main"
        "${sudo_cmd[@]}" pg_ctlcluster "$version" main start || {
            echo "postgres.sh: pg_ctlcluster $version main start failed" >&2
            return 1
        }
    fi
    local port=""
    port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }') || true
    port=${port:-5432}

    local i
    for i in $(seq 1 30); do
        if pg_isready -q -h 127.0.0.1 -p "$port"; then
            break
        fi
        if [ "$i" = 30 ]; then
            echo "postgres.sh: server on 127.0.0.1:$port not ready after 30 s" >&2
            return 1
        fi
        sleep 1
    done

    # 3. Role and database (password login over TCP: Debian's pg_hba.conf allows
    #    scram-sha-256 from 127.0.0.1).
    local psql=("${sudo_cmd[@]}" runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres)
    if [ "$(id -u)" -ne 0 ]; then
        psql=(sudo -u postgres psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres)
    fi
    "${psql[@]}" <<SQL >/dev/null || { echo "postgres.sh: cannot create role $role" >&2; return 1; }
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
        CREATE ROLE $role LOGIN PASSWORD '$password';
    ELSE
        ALTER ROLE $role LOGIN PASSWORD '$password';
    END IF;
END
\$\$;
SQL
    if ! "${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
        "${psql[@]}" -c "CREATE DATABASE $db OWNER $role" >/dev/null || {
            echo "postgres.sh: cannot create database $db" >&2
            return 1
        }
    fi

    export NIMBUS_TEST_POSTGRES_URL="postgres://$role:$password@127.0.0.1:$port/$db"
    echo "postgres.sh: PostgreSQL $version ready on 127.0.0.1:$port (NIMBUS_TEST_POSTGRES_URL exported)"
    return 0
}

# Called in a condition so that a caller's `set -e` cannot abort halfway.
if nimbus_pg_setup; then
    nimbus_pg_status=0
else
    nimbus_pg_status=$?
fi
unset -f nimbus_pg_setup
# `return` works when sourced; `exit` only when run as a script (then the export is
# lost, but the server is set up).
return "$nimbus_pg_status" 2>/dev/null || exit "$nimbus_pg_status"
