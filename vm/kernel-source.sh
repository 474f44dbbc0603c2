#!/usr/bin/env bash
# Print the path of a kernel source tree with vm/patches/*.patch applied.
#
#   KERNEL_SRC=/path/to/linux  use that tree (a bpf-next checkout, say); the
#                              series is applied unless it already is.
#   otherwise                  Debian's linux-source-$KERNEL_SERIES package is
#                              downloaded through a private apt configuration
#                              (its own sources, lists and cache directories,
#                              the archive URI read from this machine's apt
#                              sources) and unpacked once under $UPTRKV_CACHE.
#
# The unpacked tree keeps a copy of the series applied to it; when
# vm/patches/ changes, the old series is reverted and the new one applied in
# place, so the next build is incremental (make sees the changed files).
# The caller must hold the build lock (vm/build-kernel.sh does): switching
# the series under a running build would corrupt it.
#
#   kernel-source.sh --id      print only what the source is (the Debian
#                              package, or the tree and its commit), without
#                              unpacking or patching: the cache key's input.
#
# Progress goes to stderr; stdout carries only the tree's path (or the id).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${UPTRKV_CACHE:-/var/cache/uptrkv}
series=${KERNEL_SERIES:-7.2}
patches=("$here"/patches/*.patch)
suites=${KERNEL_SUITES:-"sid trixie-backports"}

log() { printf '[kernel-source] %s\n' "$*" >&2; }
die() { printf '[kernel-source] error: %s\n' "$*" >&2; exit 1; }

applies() { patch -d "$1" -p1 --dry-run --force -s "${@:3}" < "$2" >/dev/null 2>&1; }

# Apply the series in order, each checked first.
apply_series() {
    local tree=$1 p
    for p in "${patches[@]}"; do
        applies "$tree" "$p" || die "$(basename "$p") does not apply to $tree; refresh the series for this kernel"
        patch -d "$tree" -p1 -s < "$p"
        log "applied $(basename "$p")"
    done
}

# Where KERNEL_SRC stands against the series, judged on a scratch copy of the
# files it touches (the tree is not changed; no fuzz): "applied" when the whole series
# reverts, last patch first; "clean" when it applies in order; otherwise
# "mixed: <first patch that applies in neither direction>".
series_state() {
    local tree=$1 scratch f p i dir=fwd
    scratch=$(mktemp -d)
    copy_touched() {
        rm -rf "$scratch" && mkdir -p "$scratch"
        sed -n 's|^+++ b/||p; s|^--- a/||p' "${patches[@]}" | sort -u | while read -r f; do
            [ -f "$tree/$f" ] || continue
            mkdir -p "$scratch/$(dirname "$f")" && cp "$tree/$f" "$scratch/$f"
        done
    }
    copy_touched
    for ((i = ${#patches[@]} - 1; i >= 0; i--)); do
        patch -d "$scratch" -p1 -R -s -f -F0 < "${patches[i]}" >/dev/null 2>&1 || { dir=; break; }
    done
    if [ -n "$dir" ]; then rm -rf "$scratch"; echo applied; return; fi
    copy_touched
    for p in "${patches[@]}"; do
        if ! patch -d "$scratch" -p1 -s -f -F0 < "$p" >/dev/null 2>&1; then
            rm -rf "$scratch"; echo "mixed: $(basename "$p")"; return
        fi
    done
    rm -rf "$scratch"
    echo clean
}

# Make an unpacked tree carry exactly vm/patches/: revert what it carries
# (recorded in .uptrkv-series/) if that differs, then apply the series.
switch_series() {
    local tree=$1 applied=$1/.uptrkv-series p i
    if [ -d "$applied" ] && diff -rq "$applied" "$here/patches" >/dev/null 2>&1; then
        return
    fi
    touch "$tree/.uptrkv-switching"     # a switch cut short leaves this: unpack afresh
    # Files the switch leaves as they were (a series whose new version changes
    # only commit messages or selftests, say) get their old mtime back, so
    # that make rebuilds only what really changed (bpf.h is included by
    # thousands of files).
    # (Recorded in the switch marker itself: removed with it, or with the
    # tree when a switch cut short is unpacked afresh.)
    local kept=$tree/.uptrkv-switching f recorded=()
    for p in "$applied"/*.patch "${patches[@]}"; do
        if [ -f "$p" ]; then recorded+=("$p"); fi
    done
    if [ -d "$applied" ] && [ ${#recorded[@]} -gt 0 ]; then
        sed -n 's|^+++ b/||p' "${recorded[@]}" | sort -u | while read -r f; do
            if [ -f "$tree/$f" ]; then
                printf '%s %s %s\n' "$(sha256sum < "$tree/$f" | cut -c1-64)" \
                    "$(stat -c %.9Y "$tree/$f")" "$f"
            fi
        done > "$kept"
    fi
    if [ -d "$applied" ]; then
        local old=("$applied"/*.patch)
        for ((i = ${#old[@]} - 1; i >= 0; i--)); do
            p=${old[i]}
            [ -f "$p" ] || continue
            applies "$tree" "$p" -R || die "cannot revert $(basename "$p") in $tree: remove $tree to unpack afresh"
            patch -d "$tree" -p1 -R -s < "$p"
            log "reverted the old $(basename "$p")"
        done
        rm -rf "$applied"
    fi
    apply_series "$tree"
    local sum mtime
    while read -r sum mtime f; do
        if [ -f "$tree/$f" ] && [ "$(sha256sum < "$tree/$f" | cut -c1-64)" = "$sum" ]; then
            touch -m -d "@$mtime" "$tree/$f"
        fi
    done < "$kept"
    mkdir -p "$applied.tmp"
    cp "${patches[@]}" "$applied.tmp/"
    mv "$applied.tmp" "$applied"
    rm -f "$tree/.uptrkv-switching"
}

# The Debian archive URI this machine already uses (deb822 or one-line format).
archive_uri() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822: the first stanza of type deb whose suites are not -security
        uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
            { types = ""; uris = ""; suites = "";
              for (i = 1; i <= NF; i++) {
                  if ($i ~ /^Types:/) types = $i
                  if ($i ~ /^URIs:/) { split($i, a, " "); uris = a[2] }
                  if ($i ~ /^Suites:/) suites = $i }
              if (types ~ /deb( |$)/ && suites !~ /-security/ && uris != "") { print uris; exit } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    return 1
}

fetch_debian_source() {
    local aptdir=$cache/apt uri suite deb
    mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial" "$aptdir/debs"
    # One apt at a time on the private lists (apt's own locking is off there).
    exec 8> "$aptdir/.lock"
    flock 8
    uri=$(archive_uri) || die "no Debian archive found in /etc/apt sources; set KERNEL_SRC= to a kernel tree"
    : > "$aptdir/sources.list"
    for suite in $suites; do
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" >> "$aptdir/sources.list"
    done
    local aptopts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
                   -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir/cache"
                   -o "Dir::Cache::Archives=$aptdir/archives" -o "Dir::State::Status=/var/lib/dpkg/status"
                   -o "APT::Get::List-Cleanup=false" -o "Debug::NoLocking=1")
    mkdir -p "$aptdir/cache"
    # What the archive offers is looked up at most every KERNEL_LISTS_MAX_AGE
    # minutes (default 360); in between, the version found last is reused.
    local version= known=$aptdir/version-$series
    if [ -n "$(find "$known" -mmin -"${KERNEL_LISTS_MAX_AGE:-360}" 2>/dev/null)" ] &&
       cmp -s "$aptdir/sources.list" "$aptdir/sources.list.used"; then
        version=$(cat "$known")
    else
        log "updating private apt lists for: $suites"
        apt-get "${aptopts[@]}" -q update >&2 || die "apt-get update of the private lists failed"
        cp "$aptdir/sources.list" "$aptdir/sources.list.used"
        version=$(apt-cache "${aptopts[@]}" show "linux-source-$series" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
        [ -n "$version" ] || die "linux-source-$series not found in $suites"
        echo "$version" > "$known"
    fi
    deb=$(ls "$aptdir/debs"/linux-source-"${series}"_"${version//:/%3a}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        log "downloading linux-source-$series $version"
        (cd "$aptdir/debs" && apt-get "${aptopts[@]}" -q download "linux-source-$series=$version" >&2) ||
            die "download of linux-source-$series failed"
        # The version just fetched, not whichever older .deb sorts first.
        deb=$(ls "$aptdir/debs"/linux-source-"${series}"_"${version//:/%3a}"_*.deb 2>/dev/null | head -n1 || true)
        [ -n "$deb" ] || die "apt-get download of linux-source-$series=$version left no .deb in $aptdir/debs"
    fi
    echo "$deb"
}

id_only=
[ "${1:-}" = --id ] && id_only=1

if [ -n "${KERNEL_SRC:-}" ]; then
    if [ -n "$id_only" ]; then
        echo "tree:$(readlink -f "$KERNEL_SRC")@$(git -C "$KERNEL_SRC" rev-parse HEAD 2>/dev/null || echo no-git)"
        exit 0
    fi
    [ -f "$KERNEL_SRC/Makefile" ] && [ -f "$KERNEL_SRC/kernel/bpf/verifier.c" ] ||
        die "KERNEL_SRC=$KERNEL_SRC is not a kernel source tree"
    # The whole series or none of it: a tree where it neither reverts nor
    # applies as a whole (cut short, another series, stray files) is refused
    # before anything in it is changed.
    state=$(series_state "$KERNEL_SRC")
    case $state in
        applied) log "the series is already applied in $KERNEL_SRC" ;;
        clean) apply_series "$KERNEL_SRC" ;;
        *) die "KERNEL_SRC=$KERNEL_SRC carries part of vm/patches/ or conflicts with it: the series neither reverts nor applies as a whole (${state#mixed: } does not apply after the ones before it); bring the tree to the series or to none of it" ;;
    esac
    echo "$KERNEL_SRC"
    exit 0
fi

deb=$(fetch_debian_source)
debver=$(basename "$deb" .deb)
if [ -n "$id_only" ]; then
    echo "debian:$debver"
    exit 0
fi
top=$cache/src/$debver
tree=$top/linux-source-$series
if [ -f "$tree/.uptrkv-switching" ]; then
    log "a series switch in $tree was cut short: unpacking afresh"
    rm -f "$tree/.uptrkv-ready"
fi
if [ ! -f "$tree/.uptrkv-ready" ]; then
    rm -rf "$top"
    mkdir -p "$top"
    log "unpacking $(basename "$deb")"
    tmp=$(mktemp -d "$cache/src/unpack.XXXXXX")
    dpkg-deb -x "$deb" "$tmp"
    tarball=$(ls "$tmp"/usr/src/linux-source-"$series".tar.* | sed -n 1p)
    # -m: files dated now, not as in the tarball. Objects of this source may
    # survive from before (a switch cut short): a file the old series had
    # patched comes back older than its object, and make would keep it.
    tar -C "$top" -m -xf "$tarball"
    rm -rf "$tmp"
    touch "$tree/.uptrkv-ready"
fi
switch_series "$tree"
# The real path: kbuild records it, and a build must see the same one each time.
readlink -f "$tree"
