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

# join_host_cgroup NAME: where the unified hierarchy (cgroup v2) is the
# only one, this shell goes into a cgroup of its own, rfork-hosts/NAME, as
# systemd's Delegate= gives a service one: an agent makes its children's
# cgroups beside itself, which the "no internal processes" rule forbids in
# a cgroup it shares with others. With v1 hierarchies, nothing to do.
join_host_cgroup() {
    local top=/sys/fs/cgroup
    [[ $(stat -f -c %T "$top" 2>/dev/null) == cgroup2fs ]] || return 0
    mkdir -p "$top/rfork-hosts/$1" &&
        echo "+pids +memory" >"$top/cgroup.subtree_control" &&
        echo "+pids +memory" >"$top/rfork-hosts/cgroup.subtree_control" &&
        echo "$BASHPID" >"$top/rfork-hosts/$1/cgroup.procs"
}

# remove_host_cgroup NAME: what join_host_cgroup made, once its processes
# have ended (with the agent's own leaf and any child's left in it).
remove_host_cgroup() {
    local dir=/sys/fs/cgroup/rfork-hosts/$1
    [[ -d $dir ]] || return 0
    local sub
    for sub in "$dir"/rfork-*/; do
        [[ -d $sub ]] && rmdir "$sub"
    done
    rmdir "$dir"
    rmdir "${dir%/*}" 2>/dev/null || true # shared by every setup: only once empty
}
