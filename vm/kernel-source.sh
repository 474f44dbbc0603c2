#!/usr/bin/env bash
# Print the path of a kernel source tree with vm/patches/*.patch applied.
#
#   KERNEL_SRC=/path/to/linux  use that tree (a bpf-next checkout, say); the
#                              patches are applied unless they already are.
#   otherwise                  Debian's linux-source-$KERNEL_SERIES package is
#                              downloaded through a private apt configuration
#                              (its own sources, lists and cache directories,
#                              the archive URI read from this machine's apt
#                              sources) and unpacked under $UPTRKV_CACHE.
#
# Progress goes to stderr; stdout carries only the tree's path.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${UPTRKV_CACHE:-/var/cache/uptrkv}
series=${KERNEL_SERIES:-7.2}
patches=("$here"/patches/*.patch)
suites=${KERNEL_SUITES:-"sid trixie-backports"}

log() { printf '[kernel-source] %s\n' "$*" >&2; }
die() { printf '[kernel-source] error: %s\n' "$*" >&2; exit 1; }

# The series in order; a tree that already carries it is left as it is.
apply_patches() {
    local tree=$1 p
    if patch -d "$tree" -p1 -R --dry-run --force -s < "${patches[0]}" >/dev/null 2>&1; then
        log "patches already applied in $tree"
        return
    fi
    for p in "${patches[@]}"; do
        patch -d "$tree" -p1 --dry-run --force -s < "$p" >/dev/null 2>&1 ||
            die "$(basename "$p") does not apply to $tree; refresh the series for this kernel"
        patch -d "$tree" -p1 -s < "$p"
        log "applied $(basename "$p")"
    done
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
    log "updating private apt lists for: $suites"
    apt-get "${aptopts[@]}" -q update >&2 || die "apt-get update of the private lists failed"
    local version
    version=$(apt-cache "${aptopts[@]}" show "linux-source-$series" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
    [ -n "$version" ] || die "linux-source-$series not found in $suites"
    deb=$(ls "$aptdir/debs"/linux-source-"${series}"_"${version//:/%3a}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        log "downloading linux-source-$series $version"
        (cd "$aptdir/debs" && apt-get "${aptopts[@]}" -q download "linux-source-$series=$version" >&2) ||
            die "download of linux-source-$series failed"
        deb=$(ls "$aptdir/debs"/linux-source-"${series}"_*.deb | head -n1)
    fi
    echo "$deb"
}

if [ -n "${KERNEL_SRC:-}" ]; then
    [ -f "$KERNEL_SRC/Makefile" ] && [ -f "$KERNEL_SRC/kernel/bpf/verifier.c" ] ||
        die "KERNEL_SRC=$KERNEL_SRC is not a kernel source tree"
    apply_patches "$KERNEL_SRC"
    echo "$KERNEL_SRC"
    exit 0
fi

mkdir -p "$cache/src"
# One unpacker at a time: a second caller waits, then finds the tree ready.
exec 8> "$cache/src/.lock"
flock 8
deb=$(fetch_debian_source)
debver=$(basename "$deb" .deb)
patch_hash=$(cat "${patches[@]}" | sha256sum | cut -c1-12)
tree=$cache/src/$debver-$patch_hash/linux-source-$series
if [ ! -f "$tree/.uptrkv-ready" ]; then
    rm -rf "$cache/src/$debver-$patch_hash"
    mkdir -p "$cache/src/$debver-$patch_hash"
    log "unpacking $(basename "$deb")"
    tmp=$(mktemp -d "$cache/src/unpack.XXXXXX")
    dpkg-deb -x "$deb" "$tmp"
    tarball=$(ls "$tmp"/usr/src/linux-source-"$series".tar.* | head -n1)
    tar -C "$cache/src/$debver-$patch_hash" -xf "$tarball"
    rm -rf "$tmp"
    apply_patches "$tree"
    touch "$tree/.uptrkv-ready"
fi
echo "$tree"
