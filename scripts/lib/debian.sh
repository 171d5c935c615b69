# Shared by scripts/setup and scripts/fresh-root (sourced, not run): facts
# about this machine's Debian, read from its own apt configuration, never a
# host written into the code.

# This machine's Debian release, e.g. bookworm.
debian_codename() {
    local codename
    codename=$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")
    [[ -n $codename ]] && printf '%s\n' "$codename"
}

# debian_mirror_uri [security]: the URI from which the machine's apt sources
# take its Debian release (a source that serves the release's own suite,
# deb822 .sources files first, then sources.list and *.list); with
# "security", the one that serves RELEASE-security. Other vendors' sources
# (their suites are not Debian's) never match.
debian_mirror_uri() {
    local suite codename f uri
    codename=$(debian_codename) || return 1
    suite=$codename
    [[ ${1:-} == security ]] && suite=$codename-security
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # One deb822 stanza: its Types:, URIs: and Suites:, up to a blank line.
        uri=$(awk -v suite="$suite" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ")) { print uris; found = 1; exit }
                types = uris = suites = ""
            }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "types:" { $1 = ""; types = $0 }
            tolower($1) == "uris:" { uris = $2 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            END { if (!found) flush() }' "$f")
        [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        # "deb [options] URI suite components": skip the optional [...] part.
        uri=$(awk -v suite="$suite" '$1 == "deb" {
                      i = 2
                      if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                      if ($(i + 1) == suite) { print $i; exit }
                  }' "$f")
        [[ -n $uri ]] && { printf '%s\n' "$uri"; return; }
    done
    return 1
}
