#!/bin/sh
# hl-worker: the reference worker program of hardened-launcher (protocol 1).
#
# Runs inside the run container as its entrypoint, under busybox or any POSIX sh; it needs only
# sh, base64, mkdir, chmod and printf. It reads the run's instructions from stdin (the only
# channel that carries secrets), sets up the workspace, runs the phases with markers, and exits
# with the run's status. Every value on the wire is base64, so nothing is ever evaluated except
# the run's own commands, each run by `sh -c` with stdin from /dev/null.
#
# Wire format, one record per line, fields separated by one space:
#   HLRUN 1                       first line: protocol and version
#   E <name> <b64 value>          export an environment variable
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
while IFS=' ' read -r kind a b c; do
    case $kind in
        E)
            valid_name "$a" || fail "bad variable name"
            decode "$b" || fail "bad variable encoding"
            export "$a=$decoded"
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
