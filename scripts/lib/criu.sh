# CRIU for rfork (sourced by scripts/setup): find the newest CRIU source at
# least as new as the one known to work, build it, and accept it only once it
# passes `criu check` and a checkpoint and restore of a process holding a
# socket. Needs say/die and CRIU_MINIMUM, CRIU_KNOWN_SHA256, CRIU_CACHE,
# DEPS from the caller, and lib/debian.sh.

# Debian suites searched for CRIU's source, newest version first; experimental
# only when asked (RFORK_CRIU_SUITES="experimental").
read -r -a CRIU_SUITES <<<"${RFORK_CRIU_SUITES:-sid forky trixie-backports}"

criu_version_of() { "$1" --version 2>/dev/null | awk '/^Version:/ { print $2; exit }'; }

# version_at_least A B: A >= B (upstream versions, e.g. 4.2.1, 4.3).
version_at_least() { dpkg --compare-versions "$1" ge "$2"; }

criu_check() {
    local out
    out=$("$1" check 2>&1) && [[ $out == *'Looks good'* ]]
}

# criu_self_test BIN: checkpoint a process that holds a UDP socket (4.1.1
# fails exactly there on kernels 6.16 and later) and restore it in a pid
# namespace of its own, which ends it again. Prints CRIU's reason on failure.
criu_self_test() {
    local bin=$1 dir pid rc=0 i
    dir=$(mktemp -d "${TMPDIR:-/tmp}/rfork-criu-test.XXXXXX")
    # Nothing of this script's own fds (the setup lock, a caller's pipes) may
    # reach the process: CRIU would have to checkpoint them too.
    (
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
        done
        exec setsid bash -c 'exec 3<>/dev/udp/127.0.0.1/9 && exec sleep 60'
    ) </dev/null >/dev/null 2>&1 &
    pid=$!
    # Bounded wait until it is `sleep` with its socket.
    for ((i = 0; i < 100; i++)); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == sleep ]] && break
        sleep 0.05
    done
    if ! "$bin" dump -t "$pid" -D "$dir" --shell-job -o dump.log 2>/dev/null; then
        rc=1
        printf 'dump failed: %s\n' "$(grep -m1 'Error' "$dir/dump.log")"
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if ((rc == 0)) &&
        ! unshare --pid --fork --mount-proc "$bin" restore -D "$dir" --shell-job --restore-detached \
            -o restore.log 2>/dev/null; then
        rc=1
        printf 'restore failed: %s\n' "$(grep 'Error' "$dir/restore.log" | tail -n 1)"
    fi
    rm -rf -- "$dir"
    return "$rc"
}

# A private apt configuration for one Debian suite's sources (the machine's
# own sources and lists stay untouched). Sets APT_OPTS.
apt_for_suite() {
    local suite=$1 dir=$2 uri
    uri=$(debian_mirror_uri) || die "cannot find the Debian mirror in this machine's apt sources"
    rm -rf "$dir"
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/dl"
    # Debian's own archive key only, whatever else the machine trusts.
    printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$uri" "$suite" \
        >"$dir/sources.list"
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$dir/sources.list"
        -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$dir/lists"
        -o "Dir::Cache=$dir/cache"
    )
    apt-get -q "${APT_OPTS[@]}" update >"$dir/update.log" 2>&1
}

# Prints "UPSTREAM DEBIAN_VERSION SUITE TARBALL SHA256" for every CRIU source
# at least CRIU_MINIMUM in the suites, newest first: the orig tarball's name
# and checksum as the suite's signed index gives them.
criu_candidates() {
    local suite
    for suite in "${CRIU_SUITES[@]}"; do
        apt_for_suite "$suite" "$DEPS/apt.$suite" || { say "no deb-src index for Debian $suite" >&2; continue; }
        apt-cache "${APT_OPTS[@]}" showsrc criu 2>/dev/null | awk -v suite="$suite" '
            function flush() {
                if (version != "" && file != "") print upstream, version, suite, file, sum
                version = file = sum = ""; in_sums = 0
            }
            /^$/ { flush(); next }
            /^Version:/ { version = $2; upstream = version; sub(/^[0-9]+:/, "", upstream); sub(/-[^-]*$/, "", upstream) }
            /^[^ ]/ { in_sums = ($1 == "Checksums-Sha256:"); next }
            in_sums && $3 ~ /^criu_[^\/]*\.orig\.tar\.(xz|gz|bz2)$/ { sum = $1; file = $3 }
            END { flush() }' |
            while read -r upstream version suite file sum; do
                [[ $file == "criu_$upstream.orig.tar."* ]] && version_at_least "$upstream" "$CRIU_MINIMUM" &&
                    printf '%s %s %s %s %s\n' "$upstream" "$version" "$suite" "$file" "$sum"
            done
    done | sort -u | sort -r -V -k1,1
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# A machine-wide cache that root alone can change, or nothing is kept there.
cache_is_safe() {
    install -d -m 0755 -o root -g root "$CRIU_CACHE" 2>/dev/null || return 1
    # Owned by root, no write bit for group or others.
    [[ $(stat -c '%u %a' "$CRIU_CACHE") =~ ^0\ [0-7]?[0-7][0145][0145]$ ]]
}

# keep_in_cache FILE SUM: FILE, verified to have SUM, joins the cache with
# the sum beside it (each written whole under a name of its own, then renamed).
keep_in_cache() {
    local name=${1##*/} tmp
    cache_is_safe || return 0
    tmp=$(mktemp "$CRIU_CACHE/.$name.XXXXXX") && cp "$1" "$tmp" && mv -f "$tmp" "$CRIU_CACHE/$name" &&
        tmp=$(mktemp "$CRIU_CACHE/.$name.sha256.XXXXXX") && printf '%s\n' "$2" >"$tmp" &&
        mv -f "$tmp" "$CRIU_CACHE/$name.sha256" || rm -f "$tmp"
}

# verified_copy FILE SUM: a private copy of FILE in $DEPS, printed once its
# checksum is SUM: what is built is exactly what was checked.
verified_copy() {
    local copy=$DEPS/criu-src/${1##*/}
    mkdir -p "$DEPS/criu-src"
    cp "$1" "$copy" 2>/dev/null && [[ $(sha256_of "$copy") == "$2" ]] && { printf '%s\n' "$copy"; return; }
    rm -f "$copy"
    return 1
}

# fetch_candidate DEBIAN_VERSION SUITE TARBALL SHA256: prints the path of a
# private copy of that tarball, from the cache or downloaded, whose checksum
# is the signed index's.
fetch_candidate() {
    local debian=$1 suite=$2 name=$3 sum=$4 dir=$DEPS/apt.$2
    if [[ -f $CRIU_CACHE/$name ]] && cache_is_safe && verified_copy "$CRIU_CACHE/$name" "$sum"; then
        return
    fi
    apt_for_suite "$suite" "$dir" || return 1
    # The .dsc fetch may answer 404 so apt-get exits non-zero, but the orig
    # tarball may still arrive: judge by that exact file and its checksum
    # (apt leaves a file that failed its own check as NAME.FAILED).
    (cd "$dir/dl" && apt-get -q "${APT_OPTS[@]}" source --download-only "criu=$debian" </dev/null \
        >"$dir/source.log" 2>&1) || true
    if [[ ! -f $dir/dl/$name ]]; then
        say "apt could not download $name: $(grep -m1 "^E: .*orig" "$dir/source.log" || tail -n 1 "$dir/source.log")" >&2
        return 1
    fi
    if ! verified_copy "$dir/dl/$name" "$sum"; then
        say "$name does not have the checksum of Debian's signed index; not using it" >&2
        return 1
    fi
    keep_in_cache "$dir/dl/$name" "$sum"
}

# The version a CRIU source tree will report (its Makefile.versions).
source_version() {
    awk -F':=' '{ gsub(/[ \t]/, "", $1); gsub(/[ \t]/, "", $2) }
                $1 == "CRIU_VERSION_MAJOR" { major = $2 } $1 == "CRIU_VERSION_MINOR" { minor = $2 }
                $1 == "CRIU_VERSION_SUBLEVEL" { sub_ = $2 }
                END { if (major != "") print major (minor != "" ? "." minor : "") (sub_ != "" ? "." sub_ : "") }' \
        "$1/Makefile.versions" 2>/dev/null
}

# build_candidate TARBALL: builds it; on success installs $CRIU_LOCAL and
# logs version and checksum; on failure says why and returns 1.
build_candidate() {
    local tarball=$1 build=$DEPS/criu-build sum src bin version known problem=
    sum=$(sha256sum "$tarball" | cut -d' ' -f1)
    rm -rf "$build"
    mkdir -p "$build"
    tar -xf "$tarball" -C "$build" 2>/dev/null || { say "refusing ${tarball##*/}: cannot unpack it"; return 1; }
    src=$(find "$build" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    version=$(source_version "${src:-/nonexistent}")
    known=${CRIU_KNOWN_SHA256[${version:-none}]:-}
    if [[ -z $version || ! -f $src/Makefile ]]; then
        problem="it holds no CRIU source tree"
    elif ! version_at_least "$version" "$CRIU_MINIMUM"; then
        problem="it is CRIU $version, older than $CRIU_MINIMUM"
    elif [[ -n $known && $sum != "$known" ]]; then
        problem="its sha256 is $sum, not the $known known for CRIU $version"
    fi
    if [[ -n $problem ]]; then
        rm -rf "$build"
        say "refusing ${tarball##*/}: $problem"
        return 1
    fi
    say "building CRIU $version from ${tarball##*/} (sha256 $sum; about 30 s; log: $build/build.log)"
    # The ceiling keeps CRIU's Makefile from running git against the rfork repo.
    if ! GIT_CEILING_DIRECTORIES=$DEPS make -C "$src" -j2 criu </dev/null >"$build/build.log" 2>&1; then
        tail -n 20 "$build/build.log" >&2
        say "building CRIU from ${tarball##*/} failed (last lines above; full log: $build/build.log)"
        return 1
    fi
    bin=$src/criu/criu
    if [[ $(criu_version_of "$bin") != "$version" ]]; then
        problem="the binary built reports version '$(criu_version_of "$bin")', not $version"
    elif ! criu_check "$bin"; then
        problem="'criu check' fails: $("$bin" check 2>&1 | grep -m1 -i error)"
    elif ! problem=$(criu_self_test "$bin"); then
        problem="it cannot checkpoint and restore a process with a socket here: $problem"
    fi
    if [[ -n $problem ]]; then
        rm -rf "$build"
        say "refusing CRIU $version from ${tarball##*/}: $problem"
        return 1
    fi
    # Copy next to the final path, then rename: an interrupted run never
    # leaves a partial $CRIU_LOCAL behind. (Callers test this function's
    # status, which turns set -e off in it: every step is checked here.)
    if ! { mkdir -p "$(dirname "$CRIU_LOCAL")" && install -m 0755 "$bin" "$CRIU_LOCAL.tmp" &&
        mv -f "$CRIU_LOCAL.tmp" "$CRIU_LOCAL" &&
        printf 'CRIU %s from %s, sha256 %s\n' "$version" "${tarball##*/}" "$sum" >"$(dirname "$CRIU_LOCAL")/../SOURCE"; }; then
        rm -rf "$build"
        say "could not install CRIU at $CRIU_LOCAL"
        return 1
    fi
    install_criu_protos "$src" "from ${tarball##*/}, sha256 $sum" || say "could not copy CRIU's image formats to $DEPS/criu/proto"
    rm -rf "$build"
    say "installed CRIU $version at $CRIU_LOCAL (from ${tarball##*/}, sha256 $sum)"
}

# rfork's image gate decodes images with CRIU's own formats (images/*.proto):
# install_criu_protos SRC copies them from the CRIU source tree SRC, whose
# tarball was verified, to $DEPS/criu/proto (whole, then renamed).
install_criu_protos() {
    local dest=$DEPS/criu/proto
    compgen -G "$1/images/*.proto" >/dev/null || return 1
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp" && cp "$1"/images/*.proto "$dest.tmp"/ &&
        printf '%s\n' "$2" >"$dest.tmp/SOURCE" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

# ensure_criu_protos: the formats for an install made before they were
# copied, or for a system CRIU: from a verified CRIU tarball (the one given,
# one kept in the cache, or Debian's newest), nothing else built.
ensure_criu_protos() {
    [[ -f $DEPS/criu/proto/core.proto ]] && return
    local tarball= sum= upstream kept=() line debian suite name dir=$DEPS/criu-protos
    if [[ -n ${RFORK_CRIU_TARBALL:-} ]]; then
        tarball=$RFORK_CRIU_TARBALL
    else
        shopt -s nullglob
        kept=("$CRIU_CACHE"/criu_*.orig.tar.{xz,gz,bz2})
        shopt -u nullglob
        for tarball in "${kept[@]}"; do
            upstream=${tarball##*/criu_}
            upstream=${upstream%.orig.tar.*}
            sum=${CRIU_KNOWN_SHA256[$upstream]:-$(cat "$tarball.sha256" 2>/dev/null)}
            version_at_least "$upstream" "$CRIU_MINIMUM" && cache_is_safe && [[ -n $sum ]] &&
                tarball=$(verified_copy "$tarball" "$sum") && break
            tarball=
        done
        if [[ -z $tarball ]]; then
            line=$(criu_candidates | head -n 1)
            read -r upstream debian suite name sum <<<"$line"
            [[ -n $line ]] && tarball=$(fetch_candidate "$debian" "$suite" "$name" "$sum") || tarball=
        fi
    fi
    [[ -n $tarball ]] || die "found no verified CRIU source for CRIU's image formats (rfork's image gate needs them)"
    rm -rf "$dir" && mkdir -p "$dir"
    tar -xf "$tarball" -C "$dir" --wildcards '*/images/*.proto' 2>/dev/null &&
        install_criu_protos "$(find "$dir" -mindepth 1 -maxdepth 1 -type d | head -n 1)" "from ${tarball##*/}" ||
        die "could not take CRIU's image formats from ${tarball##*/}"
    rm -rf "$dir" "$DEPS"/apt.* "$DEPS/criu-src"
    say "copied CRIU's image formats from ${tarball##*/} to $DEPS/criu/proto"
}

# Builds the newest CRIU that passes, from $RFORK_CRIU_TARBALL if given.
provision_criu() {
    local rc=0
    find_and_build_criu || rc=$?
    rm -rf "$DEPS"/apt.* "$DEPS/criu-src"  # this run's private apt lists and tarball copies
    ((rc == 0)) || [[ -z ${RFORK_CRIU_TARBALL:-} ]] ||
        die "the CRIU in $RFORK_CRIU_TARBALL cannot be used (above); unset RFORK_CRIU_TARBALL to let setup find one in Debian"
    ((rc == 0)) || die "found no CRIU $CRIU_MINIMUM or newer that works here (above: what was tried).
  Either let setup search other Debian suites, e.g. RFORK_CRIU_SUITES=experimental scripts/setup,
  or download a CRIU source tarball yourself (criu-X.Y.tar.gz from the CRIU project's
  releases, or Debian's criu_X.Y.orig.tar.xz) and run RFORK_CRIU_TARBALL=PATH scripts/setup"
}

# Returns 1 when nothing could be built.
find_and_build_criu() {
    if [[ -n ${RFORK_CRIU_TARBALL:-} ]]; then
        [[ -f $RFORK_CRIU_TARBALL ]] || die "RFORK_CRIU_TARBALL=$RFORK_CRIU_TARBALL: no such file"
        local sum
        sum=$(sha256sum "$RFORK_CRIU_TARBALL" | cut -d' ' -f1)
        if [[ -x $CRIU_LOCAL && $(cat "$(dirname "$CRIU_LOCAL")/../SOURCE" 2>/dev/null) == *"sha256 $sum" ]]; then
            say "CRIU from $RFORK_CRIU_TARBALL already built at $CRIU_LOCAL"
            return
        fi
        build_candidate "$(realpath "$RFORK_CRIU_TARBALL")"
        return
    fi
    local candidates=() line upstream debian suite name sum tarball tried=()
    mapfile -t candidates < <(criu_candidates)
    for line in "${candidates[@]}"; do
        read -r upstream debian suite name sum <<<"$line"
        tried+=("$upstream ($suite)")
        say "trying CRIU $upstream from Debian $suite"
        tarball=$(fetch_candidate "$debian" "$suite" "$name" "$sum") || { say "could not download it"; continue; }
        build_candidate "$tarball" && return
    done
    # The suites may be out of reach: a tarball kept from an earlier download
    # still serves, if it still has the checksum it was verified with.
    local kept=()
    shopt -s nullglob
    kept=("$CRIU_CACHE"/criu_*.orig.tar.{xz,gz,bz2})
    shopt -u nullglob
    ((${#kept[@]})) && mapfile -t kept < <(printf '%s\n' "${kept[@]}" | sort -r -V)
    for tarball in "${kept[@]}"; do
        upstream=${tarball##*/criu_}
        upstream=${upstream%.orig.tar.*}
        version_at_least "$upstream" "$CRIU_MINIMUM" || continue
        cache_is_safe || break
        sum=${CRIU_KNOWN_SHA256[$upstream]:-$(cat "$tarball.sha256" 2>/dev/null)}
        [[ -n $sum ]] && tarball=$(verified_copy "$tarball" "$sum") || continue
        say "trying CRIU $upstream kept in $CRIU_CACHE"
        build_candidate "$tarball" && return
    done
    say "tried: ${tried[*]:-nothing: no CRIU $CRIU_MINIMUM or newer in Debian ${CRIU_SUITES[*]}}"
    return 1
}
