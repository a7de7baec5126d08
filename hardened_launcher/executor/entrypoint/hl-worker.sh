#!/bin/sh
# hl-worker: the reference worker program of hardened-launcher (protocol 1).
#
# Runs inside the run container as its entrypoint, under busybox or any POSIX sh; it needs only
# sh, base64, mkdir, chmod and printf (and, for a run with a source, git or tar, dd and cat).
# It reads the run's instructions from stdin (the only channel that carries secrets), sets up
# the workspace, runs the phases with markers, and exits with the run's status. Every value on
# the wire is base64 (but a source archive's raw bytes), so nothing is ever evaluated except
# the run's own commands, each run by `sh -c` with stdin from /dev/null.
#
# Wire format, one record per line, fields separated by one space:
#   HLRUN 1                       first line: protocol and version
#   E <name> <b64 value>          export an environment variable
#   H <b64 header>                an HTTP header for the next S only (the fetch's credentials)
#   S <b64 url> <b64 ref> <commit> fetch the source with git, check out exactly <commit>
#   A <size>                      a source archive: exactly <size> raw bytes of a plain tar
#                                 follow the line (checked and rebuilt by the launcher)
#   F <b64 path> <mode> <b64 data> write a workspace file (relative path, octal mode)
#   P <name>                      start a phase
#   C <b64 command>               a command of the current phase
#   L <size>                      a plan of <size> bytes follows GO (applying stage)
#   GO                            end of instructions; then the plan's raw bytes, if announced,
#                                 written to $HL_PLAN_FILE (read in one go: `read` is per byte)
set -u
umask 077

ws=${HL_WORKSPACE:-/workspace}
plan_file=${HL_PLAN_FILE:-}
plan_given=0
marker='::hl::'

fail() {
    printf '%s error %s\n' "$marker" "$1" >&2
    exit 125
}

decode() {
    # Decode base64 keeping trailing newlines (command substitution would strip them).
    _d=$(printf '%s' "$1" | base64 -d 2>/dev/null && printf '.') || return 1
    case $_d in *.) ;; *) return 1 ;; esac
    decoded=${_d%.}
}

valid_name() {
    case $1 in '' | [0-9]* | *[!A-Za-z0-9_]*) return 1 ;; esac
    return 0
}

valid_path() {
    case /$1/ in *//* | */./* | */../*) return 1 ;; esac
    case $1 in /* | '') return 1 ;; esac
    return 0
}

# Source: fetched before anything of the run is set (not even its variables, so nothing of the
# run can steer git), as the run's user, through the run's proxy (the container's proxy
# variables). The run is refused unless HEAD is exactly the commit the policy judged.
refuse_source() {
    printf '%s source refused %s\n' "$marker" "$1"
    fail "source refused: $2"
}

fetch_source() { # url ref commit
    command -v git >/dev/null 2>&1 || refuse_source source_git_missing "the image has no git"
    export GIT_TERMINAL_PROMPT=0 GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
    set -- "$1" "+$2:refs/hl/source" "$3"
    g() {
        # The credentials (if any) reach git through its environment, for this call only.
        GIT_CONFIG_COUNT=${source_header:+1} GIT_CONFIG_KEY_0=http.extraHeader \
            GIT_CONFIG_VALUE_0=${source_header:-} \
            git -c protocol.allow=never -c protocol.https.allow=always \
            -c protocol.http.allow=always -c advice.detachedHead=false -c init.defaultBranch=hl \
            -c core.hooksPath=/dev/null -C "$ws" "$@" </dev/null
    }
    g init -q || refuse_source source_fetch_failed "git init failed"
    g fetch -q --no-tags --depth=1 "$1" "$2" || refuse_source source_fetch_failed "git fetch failed"
    tip=$(g rev-parse -q --verify 'refs/hl/source^{commit}') || tip=''
    if [ "$tip" != "$3" ]; then
        # Not the tip: the commit must be in the ref's history.
        g fetch -q --no-tags --unshallow "$1" "$2" 2>/dev/null || :
        g merge-base --is-ancestor "$3" refs/hl/source 2>/dev/null \
            || refuse_source source_commit_mismatch "the commit is not on the ref"
    fi
    g -c core.symlinks=true checkout -q --detach "$3" 2>/dev/null \
        || refuse_source source_commit_mismatch "the commit cannot be checked out"
    head=$(g rev-parse -q --verify 'HEAD^{commit}') || head=''
    [ "$head" = "$3" ] || refuse_source source_commit_mismatch "HEAD is not the commit"
    g update-ref -d refs/hl/source
    printf '%s source commit %s\n' "$marker" "$head"
    unset tip head source_header
}

# Copy exactly $1 bytes of stdin to stdout: dd reads at most bs bytes per call, so nothing
# after them is consumed; fullblock makes a short read from the pipe wait for the rest.
read_bytes() {
    _full=$(($1 / 65536))
    _rest=$(($1 % 65536))
    if [ "$_full" -gt 0 ]; then
        dd bs=65536 count="$_full" iflag=fullblock 2>/dev/null || return 1
    fi
    if [ "$_rest" -gt 0 ]; then
        dd bs="$_rest" count=1 iflag=fullblock 2>/dev/null || return 1
    fi
    return 0
}

# The run's own deadline (HL_TIME_LIMIT_SECONDS, plumbing set by the launcher, later than the
# launcher's own stop): if the launcher dies, the run still ends. The watchdog stops this worker
# (TERM, then KILL); when the worker exits, the container's init exits and every process with it.
worker_pid=$$
case ${HL_TIME_LIMIT_SECONDS:-} in
    '' | *[!0-9]*) ;;
    *)
        (
            trap - TERM INT
            sleep "$HL_TIME_LIMIT_SECONDS"
            kill -TERM "$worker_pid" 2>/dev/null
            sleep 10
            kill -KILL "$worker_pid" 2>/dev/null
        ) </dev/null >/dev/null 2>&1 &
        ;;
esac

IFS= read -r header || fail "no instructions on stdin"
[ "$header" = "HLRUN 1" ] || fail "unknown instruction header"

plan=''
done_reading=0
source_header=''
while IFS=' ' read -r kind a b c; do
    case $kind in
        E)
            valid_name "$a" || fail "bad variable name"
            decode "$b" || fail "bad variable encoding"
            export "$a=$decoded"
            ;;
        H)
            decode "$a" || fail "bad header encoding"
            source_header=$decoded
            ;;
        S)
            decode "$a" || fail "bad source encoding"
            url=$decoded
            decode "$b" || fail "bad source encoding"
            case $c in '' | *[!0-9a-f]*) fail "bad source commit" ;; esac
            fetch_source "$url" "$decoded" "$c"
            unset url
            ;;
        A)
            case $a in '' | *[!0-9]*) fail "bad archive size" ;; esac
            command -v tar >/dev/null 2>&1 && command -v dd >/dev/null 2>&1 \
                || refuse_source source_tools_missing "the image has no tar or dd"
            # cat drains what tar leaves unread (zero padding), so the next record is next.
            read_bytes "$a" | (umask 022 && tar -xf - -C "$ws" && cat >/dev/null) \
                || refuse_source source_unpack_failed "the source archive cannot be unpacked"
            ;;
        F)
            decode "$a" || fail "bad file path encoding"
            path=$decoded
            valid_path "$path" || fail "bad file path"
            case $b in '' | *[!0-7]*) fail "bad file mode" ;; esac
            dir=${path%/*}
            [ "$dir" = "$path" ] || mkdir -p "$ws/$dir" || fail "cannot create a directory"
            printf '%s' "$c" | base64 -d >"$ws/$path" 2>/dev/null || fail "cannot write a file"
            chmod "$b" "$ws/$path" || fail "cannot set a file mode"
            ;;
        L)
            [ -n "$plan_file" ] || fail "a plan without HL_PLAN_FILE"
            case $a in '' | *[!0-9]*) fail "bad plan size" ;; esac
            plan_size=$a
            plan_given=1
            ;;
        P)
            valid_name "$a" || fail "bad phase name"
            plan="$plan
P $a"
            ;;
        C)
            plan="$plan
C $a"
            ;;
        GO)
            done_reading=1
            break
            ;;
        *) fail "unknown instruction" ;;
    esac
done
[ "$done_reading" = 1 ] || fail "instructions ended early"
if [ "$plan_given" = 1 ]; then
    mkdir -p "${plan_file%/*}" || fail "cannot create the plan directory"
    head -c "$plan_size" >"$plan_file" || fail "cannot write the plan"
    [ "$(wc -c <"$plan_file")" -eq "$plan_size" ] || fail "the plan ended early"
    chmod 400 "$plan_file" || fail "cannot set the plan's mode"
fi
unset a b c decoded _d header

child=''
stopping=0
on_term() {
    stopping=1
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
}
trap on_term TERM INT

cd "$ws" || fail "no workspace"
if [ -n "$plan_file" ] && [ "$plan_given" = 0 ]; then
    mkdir -p "${plan_file%/*}" && chmod 700 "${plan_file%/*}" || fail "no plan directory"
fi
outputs=${HL_OUTPUTS:-}
if [ -n "$outputs" ]; then
    mkdir -p "$outputs" && chmod 700 "$outputs" || outputs=''
fi

run_plan() {
    trap on_term TERM INT # a background subshell starts with default traps
    phase=''
    while IFS=' ' read -r kind a; do
        case $kind in
            P)
                if [ -n "$phase" ]; then printf '%s phase %s end status=0\n' "$marker" "$phase"; fi
                phase=$a
                printf '%s phase %s start\n' "$marker" "$phase"
                ;;
            C)
                decode "$a" || fail "cannot decode a command (bad encoding, or no process left)"
                sh -c "$decoded" </dev/null &
                child=$!
                status=0
                wait "$child" || status=$?
                # A trapped signal interrupts `wait`; wait again for the child's real status.
                while kill -0 "$child" 2>/dev/null; do
                    status=0
                    wait "$child" || status=$?
                done
                child=''
                if [ "$stopping" = 1 ]; then
                    printf '%s phase %s stopped\n' "$marker" "$phase"
                    return 143
                fi
                if [ "$status" != 0 ]; then
                    printf '%s phase %s end status=%s\n' "$marker" "$phase" "$status"
                    return "$status"
                fi
                ;;
        esac
    done
    [ -n "$phase" ] && printf '%s phase %s end status=0\n' "$marker" "$phase"
    return 0
}

# The phases run in one child process, made now, while the run cannot yet have used up its
# processes. This process then only waits and prints (shell builtins, no fork), so a run that
# exhausts its process limit cannot take the worker down with it: a shell that cannot fork
# exits with status 2, and the child's status is reported here like any other.
status=0
run_plan <<EOF &
$plan
EOF
runner=$!
on_term_parent() {
    stopping=1
    kill -TERM "$runner" 2>/dev/null
}
trap on_term_parent TERM INT
wait "$runner" || status=$?
# A trapped signal interrupts `wait`; wait again for the child's real status.
while kill -0 "$runner" 2>/dev/null; do
    status=0
    wait "$runner" || status=$?
done
printf '%s run end status=%s\n' "$marker" "$status"
# Outputs: each top-level regular file of $HL_OUTPUTS (at most 1 MiB), one line each, after the
# run's end; the launcher takes these lines out of the log, caps and redacts them.
if [ -n "$outputs" ]; then
    for f in "$outputs"/*; do
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        size=$(wc -c <"$f" 2>/dev/null) || continue
        size=$((size + 0))
        [ "$size" -le 1048576 ] || continue
        printf '%s output %s %s\n' "$marker" "$(printf '%s' "${f##*/}" | base64 | tr -d '\n')" \
            "$(base64 <"$f" | tr -d '\n')"
    done
fi
# A planning stage's plan ($HL_PLAN_FILE when no plan was given): one frame, never redacted
# (the launcher seals it to the pool key); at most 8 MiB.
if [ -n "$plan_file" ] && [ "$plan_given" = 0 ] && [ -f "$plan_file" ] && [ ! -L "$plan_file" ]; then
    size=$(wc -c <"$plan_file" 2>/dev/null) || size=-1
    size=$((size + 0))
    if [ "$size" -ge 0 ] && [ "$size" -le 8388608 ]; then
        printf '%s plan %s %s\n' "$marker" "$(printf plan | base64)" \
            "$(base64 <"$plan_file" | tr -d '\n')"
    fi
fi
exit "$status"
