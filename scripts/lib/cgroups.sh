# Shared by scripts/hosts and scripts/fresh-root (sourced, not run).

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
