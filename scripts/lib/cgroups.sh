# Shared by scripts/hosts and scripts/fresh-root (sourced, not run): the
# machine's cgroups, as rfork-agent needs them, for test hosts and fresh roots.

# mount_machine_cgroups ROOT: the machine's cgroup hierarchies, as its pid 1
# has them under /sys/fs/cgroup (v2 alone, or v1 ones beside a v2), mounted
# at the same places under ROOT ("" for /). A fresh sysfs, and the one `ip
# netns exec` mounts, have an empty /sys/fs/cgroup; a real machine's never
# is, and rfork-agent needs the pids and memory controllers there.
mount_machine_cgroups() {
    local root=$1 line rest type source options point
    local -a under=()
    while IFS= read -r line; do
        rest=${line#* - }
        read -r type source options <<<"$rest"
        [[ $type == cgroup || $type == cgroup2 ]] || continue
        read -r _ _ _ _ point _ <<<"$line"
        if [[ $point == /sys/fs/cgroup ]]; then
            mount -t "$type" -o "$options" "$source" "$root/sys/fs/cgroup"
            return
        fi
        [[ $point == /sys/fs/cgroup/* ]] && under+=("$type $options $point")
    done </proc/1/mountinfo
    ((${#under[@]})) || return 0
    mount -t tmpfs -o mode=0755 cgroup "$root/sys/fs/cgroup"
    local entry
    for entry in "${under[@]}"; do
        read -r type options point <<<"$entry"
        mkdir -p "$root$point"
        # The same controllers (and name=) mount the machine's hierarchy again, not a new one.
        mount -t "$type" -o "$options" cgroup "$root$point"
    done
}

# join_host_cgroup NAME RECORD: this shell goes into cgroups of its own,
# rfork-hosts/NAME, as systemd gives a service (Delegate=) on a real
# machine, so that test hosts never share the cgroup their agents make
# children's cgroups in. Cgroup v2 alone: under the hierarchy's root, with
# the pids and memory controllers enabled down to it (an agent makes its
# children's cgroups beside itself, which the "no internal processes" rule
# forbids in a cgroup shared with others). v1: under this shell's own cgroup
# in the pids and memory hierarchies. The directories made go to RECORD.
join_host_cgroup() {
    local name=$1 record=$2 top=/sys/fs/cgroup
    : >"$record"
    if [[ $(stat -f -c %T "$top" 2>/dev/null) == cgroup2fs ]]; then
        mkdir -p "$top/rfork-hosts/$name" && echo "$top/rfork-hosts/$name" >>"$record" &&
            echo "+pids +memory" >"$top/cgroup.subtree_control" &&
            echo "+pids +memory" >"$top/rfork-hosts/cgroup.subtree_control" &&
            echo "$BASHPID" >"$top/rfork-hosts/$name/cgroup.procs"
        return
    fi
    # Where this shell is, read before it moves; one directory per
    # hierarchy (pids and memory may be mounted together).
    local controller own dir
    local -A seen=()
    local -a dirs=()
    for controller in pids memory; do
        [[ -d $top/$controller ]] || continue
        own=$(awk -F: -v c="$controller" '$2 ~ "(^|,)" c "(,|$)" { print $3 }' /proc/self/cgroup)
        dir=$(realpath -e "$top/$controller") || return 1
        dir+=${own%/}/rfork-hosts/$name
        [[ -z ${seen[$dir]:-} ]] || continue
        seen[$dir]=1
        dirs+=("$dir")
    done
    for dir in "${dirs[@]}"; do
        mkdir -p "$dir" && echo "$dir" >>"$record" && echo "$BASHPID" >"$dir/cgroup.procs" || return 1
    done
}

# remove_host_cgroup RECORD: what join_host_cgroup made, once its processes
# have ended (with the agent's own leaf and any child's left in it).
remove_host_cgroup() {
    local record=$1 dir sub
    [[ -f $record ]] || return 0
    while IFS= read -r dir; do
        [[ -d $dir ]] || continue
        for sub in "$dir"/rfork-agent/ "$dir"/rfork-child-*/; do
            [[ -d $sub ]] && rmdir "$sub"
        done
        rmdir "$dir" || return 1
        rmdir "${dir%/*}" 2>/dev/null || true # rfork-hosts, shared by every setup: only once empty
    done <"$record"
}
