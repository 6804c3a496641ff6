#!/usr/bin/env bash
# The static `flumen` binary: builds it for x86_64-unknown-linux-musl, checks that `file`
# calls it statically linked, runs `flumen --version`, and does a produce -> consume round
# trip with it against a broker started by `cargo run -p flumen-testcontainers -- up`.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
# The C parts (zstd, ring, mimalloc) must be compiled by musl-gcc (Debian's musl-tools), not
# the glibc gcc; cc-rs usually finds it alone, this makes sure.
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}"
cargo build --release --locked --target "${target}" -p flumen-cli
bin="target/${target}/release/flumen"

info=$(file -b "${bin}")
echo "file: ${info}"
case "${info}" in
*"statically linked"* | *"static-pie linked"*) ;;
*)
    echo "${bin} is not statically linked" >&2
    exit 1
    ;;
esac
work=$(mktemp -d)
strip -o "${work}/flumen" "${bin}"
echo "size: $(stat -c %s "${bin}") bytes as built (release profile keeps line tables), $(stat -c %s "${work}/flumen") bytes stripped"
"${bin}" --version

# A broker, in the background; its stdout carries NAME=value lines once it is ready.
up_pid=""
cleanup() {
    if [[ -n "${up_pid}" ]] && kill -0 "${up_pid}" 2>/dev/null; then
        kill -TERM "${up_pid}"
        wait "${up_pid}" || true
    fi
    rm -rf "${work}"
}
trap cleanup EXIT
cargo build --locked -q -p flumen-testcontainers --bin up
# `cargo run` replaces itself with `up` on Unix, so this pid is the broker holder's.
cargo run --locked -q -p flumen-testcontainers -- up >"${work}/up.out" 2>"${work}/up.err" &
up_pid=$!
deadline=$((SECONDS + 300))
until grep -q '^FLUMEN_KAFKA_BOOTSTRAP=' "${work}/up.out"; do
    if ! kill -0 "${up_pid}" 2>/dev/null || ((SECONDS > deadline)); then
        echo "the test broker did not come up:" >&2
        cat "${work}/up.err" >&2
        exit 1
    fi
    sleep 1
done
bootstrap=$(sed -n 's/^FLUMEN_KAFKA_BOOTSTRAP=//p' "${work}/up.out")
echo "broker: ${bootstrap}"

topic="static-roundtrip-$$"
sent=$'k1:v1\nk2:v2 with spaces\n:empty key\nk4:v:4'
"${bin}" -b "${bootstrap}" topics create "${topic}" --partitions 1 --replication-factor 1
printf '%s\n' "${sent}" | "${bin}" -b "${bootstrap}" produce "${topic}" --key-separator :
got=$("${bin}" -b "${bootstrap}" consume "${topic}" --from-beginning --exit-at-end --format '%k:%v\n')
if [[ "${got}" != "${sent}" ]]; then
    echo "round trip mismatch; sent:" >&2
    printf '%s\n' "${sent}" >&2
    echo "got:" >&2
    printf '%s\n' "${got}" >&2
    exit 1
fi
echo "static binary round trip: $(printf '%s\n' "${got}" | wc -l) records produced and consumed back unchanged"
