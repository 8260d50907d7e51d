#!/usr/bin/env bash
# Rebuilds abi/xen-4.17-x86_64.json from the installed Xen public headers (Debian libxen-dev).
#
#   abi/generate.sh            write abi/xen-4.17-x86_64.json
#   abi/generate.sh OUT.json   write somewhere else (the drift test uses this)
#
# The probe is our own C program (abi/probe/); the compiler answers every size, offset and value.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/xen-4.17-x86_64.json}"
include="${XEN_INCLUDE:-/usr/include}"
cc="${CC:-cc}"

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "abi/generate.sh: no C compiler '$cc' found; install it with: apt-get install -y gcc" >&2
    exit 2
fi
for h in xen/xen.h xen/event_channel.h xen/grant_table.h xen/io/xs_wire.h xen/arch-x86/xen-x86_64.h; do
    if [[ ! -f "$include/$h" ]]; then
        echo "abi/generate.sh: missing Xen header $include/$h; install it with: apt-get install -y libxen-dev" >&2
        exit 2
    fi
done

release="4.17"
if command -v dpkg-query >/dev/null 2>&1; then
    v="$(dpkg-query -W -f='${Version}' libxen-dev 2>/dev/null || true)"
    if [[ -n "$v" ]]; then
        release="$(echo "$v" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')"
    fi
fi

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT

# x86-64 PV guest view of the ABI, at the latest interface version the headers offer.
"$cc" -std=gnu11 -O0 -Wall -Werror -Wno-type-limits -Wno-bool-compare \
    -m64 -D__XEN_INTERFACE_VERSION__=0x00040e00 \
    -DPROBE_XEN_RELEASE="\"$release\"" \
    -I"$include" -o "$build/probe" "$here"/probe/*.c
"$build/probe" > "$build/out.json"
mv "$build/out.json" "$out"
echo "abi/generate.sh: wrote $out" >&2
