#!/usr/bin/env bash
# Runs Paravirt's whole test suite on a Debian machine with the .NET 10 SDK.
# Installs what the tests need when it is missing (as root: apt-get update once, then install),
# then runs every test and ends with one line: "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Debian packages the tests use: the C compiler and Xen headers for the ABI probe, Xen's own
# xenstore clients and PV GRUB as conformance peers, e2fsprogs for disk images, and the
# compressors Linux's build runs for bzImage payloads (xz has no in-process writer here; the
# others check our decoders against the real tools' output).
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
[[ -f /usr/include/xen/xen.h && -f /usr/include/xen/io/xs_wire.h ]] || missing+=(libxen-dev)
command -v xenstore-read >/dev/null 2>&1 || missing+=(xenstore-utils)
[[ -f /usr/lib/grub-xen/grub-x86_64-xen.bin ]] || missing+=(grub-xen-host)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
{ command -v xz && command -v lzma; } >/dev/null 2>&1 || missing+=(xz-utils)
command -v bzip2 >/dev/null 2>&1 || missing+=(bzip2)
command -v lz4 >/dev/null 2>&1 || missing+=(lz4)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v gzip >/dev/null 2>&1 || missing+=(gzip)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "test.sh: missing Debian packages: ${missing[*]}; run as root, or: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "test.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null || {
        echo "test.sh: apt-get install -y ${missing[*]} failed" >&2
        exit 1
    }
fi

# Real guests from Debian's packages, fetched once into a cache (never installed, never committed):
# the -unsigned kernels of linux-image-cloud-amd64 and linux-image-amd64 (bzImages with CONFIG_XEN_PV=y,
# their modules beside them) and busybox-static for the initramfs images the tests build.
cache="${PARAVIRT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/paravirt}"
export PARAVIRT_CACHE="$cache"
apt_updated=0
fetch_deb() { # fetch_deb PACKAGE DIR: apt-get download PACKAGE and dpkg -x it into $cache/DIR
    local pkg="$1" dest="$cache/$2" tmp
    [[ -f "$dest/.fetched" && "$(cat "$dest/.fetched")" == "$pkg" ]] && return 0
    tmp="$(mktemp -d)"
    if ! (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1); then
        if ((apt_updated == 0)) && [[ $(id -u) -eq 0 ]]; then
            apt_updated=1
            apt-get update -qq >/dev/null 2>&1
        fi
        (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null) || {
            echo "test.sh: apt-get download $pkg failed" >&2
            rm -rf "$tmp"
            return 1
        }
    fi
    rm -rf "$dest" && mkdir -p "$dest" && dpkg -x "$tmp"/*.deb "$dest" && echo "$pkg" >"$dest/.fetched"
    local rc=$?
    rm -rf "$tmp"
    return $rc
}
kernel_package() { # kernel_package META: the -unsigned image package the metapackage depends on
    local dep
    dep="$(apt-cache depends "$1" 2>/dev/null | sed -nE 's/^ *Depends: (linux-image-[0-9][^ ]*)$/\1/p' | head -n1)"
    if [[ -z "$dep" && $apt_updated -eq 0 && $(id -u) -eq 0 ]]; then
        apt_updated=1
        apt-get update -qq >/dev/null 2>&1
        dep="$(apt-cache depends "$1" 2>/dev/null | sed -nE 's/^ *Depends: (linux-image-[0-9][^ ]*)$/\1/p' | head -n1)"
    fi
    [[ -n "$dep" ]] && echo "${dep}-unsigned"
}
mkdir -p "$cache"
for meta in linux-image-cloud-amd64:linux-cloud linux-image-amd64:linux-generic; do
    pkg="$(kernel_package "${meta%%:*}")" && fetch_deb "$pkg" "${meta#*:}" \
        || echo "test.sh: could not fetch the kernel of ${meta%%:*} (apt-get download linux-image-<version>-unsigned); the Linux tests will fail naming it" >&2
done
fetch_deb busybox-static busybox \
    || echo "test.sh: could not fetch busybox-static (apt-get download busybox-static); the Linux tests will fail naming it" >&2

results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT
dotnet test Paravirt.sln -c Release --logger "trx" --logger "console;verbosity=minimal" \
    --results-directory "$results"
status=$?

# Sum the counters of every TRX file the run wrote.
passed=0 failed=0 skipped=0 files=0
for trx in "$results"/*.trx; do
    [[ -f "$trx" ]] || continue
    files=$((files + 1))
    counters="$(grep -o '<Counters [^>]*>' "$trx" | head -n1)"
    get() { echo "$counters" | sed -nE "s/.* $1=\"([0-9]+)\".*/\1/p"; }
    # Skipped tests are counted in total but not in executed.
    passed=$((passed + $(get passed)))
    failed=$((failed + $(get failed) + $(get error) + $(get timeout) + $(get aborted)))
    skipped=$((skipped + $(get total) - $(get executed)))
done
if ((files == 0)); then
    echo "test.sh: no test results were written (did the build fail?)" >&2
    failed=$((failed + 1))
    status=1
fi
if ((status == 0 && failed > 0)); then
    status=1
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
