#!/bin/bash
# proxysuite runc wrapper: runs the real runc after removing, from the container's capability sets, every
# capability this machine's bounding set lacks (on the project's machines: CAP_SYS_RESOURCE).
#
# Why: `docker run --privileged` asks runc for every capability the engine knows; when the bounding set of the
# engine itself lacks one, runc fails with "unable to apply caps: operation not permitted". kind runs its nodes
# with --privileged and enters them with `docker exec --privileged`, so the edit is made on the OCI bundle's
# config.json (create, run) and on the --process JSON (exec). Nothing else in the spec is touched.
# Installed by `proxysuite kind setup-engine`; REAL_RUNC is substituted at install time.
REAL_RUNC="${PROXYSUITE_REAL_RUNC:-@REAL_RUNC@}"

# Capability names by number (linux/capability.h), for reading the bounding set.
CAPS=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
      NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
      SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
      AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
      PERFMON BPF CHECKPOINT_RESTORE)

missing_caps() {
    local bnd last i out=()
    bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
    last=$(cat /proc/sys/kernel/cap_last_cap 2>/dev/null || echo $((${#CAPS[@]} - 1)))
    for ((i = 0; i <= last && i < ${#CAPS[@]}; i++)); do
        if (( ((16#$bnd) >> i & 1) == 0 )); then out+=("\"CAP_${CAPS[i]}\""); fi
    done
    local IFS=,
    echo "[${out[*]}]"
}

# strip FILE JQ_PATH: delete the missing capabilities from every set under JQ_PATH (in place, atomically).
strip() {
    local file="$1" path="$2" drop tmp
    [ -f "$file" ] || return 0
    drop=$(missing_caps)
    [ "$drop" = "[]" ] && return 0
    tmp="$file.proxysuite.$$"
    if jq -c --argjson drop "$drop" \
        "if $path then $path |= with_entries(.value |= (if type == \"array\" then map(select(. as \$c | \$drop | index(\$c) | not)) else . end)) else . end" \
        "$file" > "$tmp"; then
        mv -f "$tmp" "$file"
    else
        rm -f "$tmp"
    fi
}

# Find the subcommand after runc's global options, then its --bundle / --process argument.
args=("$@")
cmd="" bundle="" process=""
i=0
while (( i < ${#args[@]} )); do
    a="${args[i]}"
    if [ -z "$cmd" ]; then
        case "$a" in
            --root|--log|--log-format|--criu|--rootless) i=$((i + 1)) ;;
            -*) ;;
            *) cmd="$a" ;;
        esac
    else
        case "$a" in
            --bundle|-b) bundle="${args[i + 1]}"; i=$((i + 1)) ;;
            --bundle=*) bundle="${a#--bundle=}" ;;
            --process|-p) process="${args[i + 1]}"; i=$((i + 1)) ;;
            --process=*) process="${a#--process=}" ;;
        esac
    fi
    i=$((i + 1))
done

case "$cmd" in
    create|run) strip "${bundle:-.}/config.json" ".process.capabilities" ;;
    exec) [ -n "$process" ] && strip "$process" ".capabilities" ;;
esac
exec "$REAL_RUNC" "$@"
