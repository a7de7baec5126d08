# shellcheck shell=bash
# System set-up shared by scripts/test and the CI entry point: Debian packages and dockerd.
# Sourced, not executed. Every function is idempotent.

HL_APT_PACKAGES=(gnupg openssl docker.io mosquitto iproute2 ca-certificates busybox-static runsc tinyproxy systemd mmdebstrap git gcc libc6-dev)
HL_STARTED_DOCKERD_PID=""

hl_log() { printf '==> %s\n' "$*" >&2; }

hl_missing_packages() {
    local pkg missing=()
    for pkg in "${HL_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    printf '%s\n' "${missing[@]}"
}

hl_ensure_packages() {
    local missing
    mapfile -t missing < <(hl_missing_packages | sed '/^$/d')
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        hl_log "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
        return 1
    fi
    hl_log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packaged services must not run with their default configuration: tests start their own.
    if command -v systemctl >/dev/null 2>&1; then systemctl stop mosquitto >/dev/null 2>&1 || true; fi
    pkill -x mosquitto >/dev/null 2>&1 || true
}

hl_docker_ready() { docker info >/dev/null 2>&1; }

hl_ensure_dockerd() {
    hl_docker_ready && return 0
    if [ "$(id -u)" -ne 0 ]; then
        hl_log "the Docker daemon is not reachable and only root can start it here"
        return 1
    fi
    hl_log "starting dockerd"
    local log=${TMPDIR:-/tmp}/hardened-launcher-dockerd.log
    local args=()
    # Register gVisor (SPACELIFT_WORKER_RUNTIME=runsc) when it is installed and the machine has
    # no daemon configuration of its own; runsc runs here only with its own network disabled.
    if [ -x /usr/bin/runsc ] && [ ! -e /etc/docker/daemon.json ]; then
        local config=${TMPDIR:-/tmp}/hardened-launcher-daemon.json
        cat >"$config" <<'JSON'
{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}}
JSON
        args+=(--config-file "$config")
    fi
    dockerd "${args[@]}" >"$log" 2>&1 &
    HL_STARTED_DOCKERD_PID=$!
    local i
    for i in $(seq 1 60); do
        hl_docker_ready && return 0
        if ! kill -0 "$HL_STARTED_DOCKERD_PID" 2>/dev/null; then
            hl_log "dockerd exited; its log follows"; tail -n 30 "$log" >&2; return 1
        fi
        sleep 0.5
    done
    hl_log "dockerd did not become ready in 30 s; its log follows"; tail -n 30 "$log" >&2
    return 1
}

hl_stop_started_dockerd() {
    [ -n "$HL_STARTED_DOCKERD_PID" ] || return 0
    hl_log "stopping the dockerd this script started"
    kill "$HL_STARTED_DOCKERD_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do kill -0 "$HL_STARTED_DOCKERD_PID" 2>/dev/null || break; sleep 0.25; done
    HL_STARTED_DOCKERD_PID=""
}

hl_ensure_venv() {
    local root=$1
    if [ ! -x "$root/.venv/bin/python" ]; then
        hl_log "creating the virtualenv in .venv"
        python3 -m venv "$root/.venv"
    fi
    # Reinstall only when the project's metadata or the lock changed since the last install.
    # Every dependency comes from the hash-pinned lock (scripts/lock); the project itself is
    # installed editable without dependencies and without build isolation, so its build back end
    # is the locked setuptools too.
    # The editable install also builds the C extensions in place (setup.py): rebuild them when
    # a source changed or one is missing (a fresh checkout of a cached virtualenv).
    local stamp="$root/.venv/.hl-installed" lock="$root/requirements/dev.lock"
    local rebuild=0 ext_src ext_built
    for ext_src in "$root"/hardened_launcher/redaction/_*.c; do
        [ -f "$ext_src" ] || continue
        ext_built=("${ext_src%.c}"*.so)
        if [ "$ext_src" -nt "$stamp" ] \
            || { [ ! -e "${ext_built[0]}" ] && command -v cc >/dev/null; }; then
            rebuild=1
        fi
    done
    if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] || [ "$lock" -nt "$stamp" ] \
        || [ "$root/setup.py" -nt "$stamp" ] || [ "$rebuild" = 1 ]; then
        hl_log "installing the locked dependencies (--require-hashes) and the project"
        local log="$root/.venv/pip-install.log"
        if ! { "$root/.venv/bin/python" -m pip install --disable-pip-version-check \
                    --require-hashes -r "$lock" \
                && "$root/.venv/bin/python" -m pip install --disable-pip-version-check \
                    --no-deps --no-build-isolation -e "$root"; } >"$log" 2>&1; then
            hl_log "pip install failed; the end of its log ($log) follows"
            tail -n 40 "$log" >&2
            return 1
        fi
        touch "$stamp"
    fi
}
