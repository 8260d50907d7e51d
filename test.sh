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
