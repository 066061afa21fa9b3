#!/usr/bin/env bash
# The long fuzz run: the property-based fuzz targets that `cargo test` runs a few
# thousand cases of, each run for CASES cases (default 10,000,000) in the `fuzz` profile
# (optimized, overflow checks and debug assertions on), one after the other.
#
#   scripts/fuzz.sh                      # every target, 10 M cases each
#   scripts/fuzz.sh 1000000              # every target, 1 M cases each
#   scripts/fuzz.sh 10000000 config_     # only the targets whose name contains config_
#
# Each line of output: the target, the cases run, the seconds taken, ok or FAILED. A
# failing case is printed by proptest, shrunk to a minimal input: make it a regression
# test beside the target (a plain #[test] with that input), then fix the code.
#
# Adding a target: write a `proptest!` test named `fuzz_*` that reads its case count
# with the file's `config(short)` helper (PROPTEST_CASES, else a short default), then add
# a line to TARGETS below: "package test-binary test-name".
#
# The path normalizer's properties sit beside it (crates/proxy/src/normalize_tests.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

CASES="${1:-10000000}"
FILTER="${2:-}"
TARGETS=(
    "weft-proxy lib h1client::fuzz::fuzz_h1client_head_round_trip"
    "weft-proxy lib h1client::fuzz::fuzz_h1client_head_hostile"
    "weft-proxy lib h1client::fuzz::fuzz_h1client_chunked_round_trip"
    "weft-proxy lib h1client::fuzz::fuzz_h1client_chunked_hostile"
    "weft-proxy lib h1client::fuzz::fuzz_h1client_raw_body"
    "weft-proxy lib h1client::fuzz::fuzz_h1client_numbers_strict"
    "weft-bench lib h1parse::fuzz::fuzz_bench_head_round_trip"
    "weft-bench lib h1parse::fuzz::fuzz_bench_head_hostile"
    "weft-bench lib h1parse::fuzz::fuzz_bench_chunked_round_trip"
    "weft-bench lib h1parse::fuzz::fuzz_bench_chunked_hostile"
    "weft-api lib fuzz::fuzz_api_messages_round_trip"
    "weft-api lib fuzz::fuzz_api_messages_hostile"
    "weft-api lib fuzz::fuzz_api_mesh_round_trip"
    "weft-api lib fuzz::fuzz_api_mesh_hostile"
    "weft-api lib fuzz::fuzz_api_queries"
    "weft-config fuzz fuzz_config_mutated_resources"
    "weft-config fuzz fuzz_config_random_text"
    "weft-proxy lib normalize::tests::fuzz_path_idempotent_and_clean"
    "weft-proxy lib normalize::tests::fuzz_path_never_panics"
    "weft-proxy lib dns::answer::tests::fuzz_dns_decide_hostile"
    "weft-proxy lib dns::answer::tests::fuzz_dns_decide_mutated"
    "weft-tls fuzz fuzz_tls_spiffe_parse"
    "weft-tls fuzz fuzz_tls_csr_mutated"
    "weft-tls fuzz fuzz_tls_csr_text"
    "weft-tls fuzz fuzz_tls_certificate_mutated"
    "weft-authz lib jwt::tests::fuzz_jwt_verify_hostile"
    "weft-authz lib jwt::tests::fuzz_jwt_verify_mutated"
)

CARGO=(nice -n "${FUZZ_NICE:-15}" cargo test --profile fuzz)
declare -A BIN=()
target_args() { # package binary -> cargo's selector
    if [ "$2" = lib ]; then echo "-p $1 --lib"; else echo "-p $1 --test $2"; fi
}
# Build every test binary first (so the runs below start no compiler).
for t in "${TARGETS[@]}"; do
    read -r pkg bin name <<<"$t"
    [[ -n "$FILTER" && "$name" != *"$FILTER"* ]] && continue
    key="$pkg/$bin"
    [ -n "${BIN[$key]:-}" ] && continue
    # shellcheck disable=SC2046
    BIN[$key]=$("${CARGO[@]}" $(target_args "$pkg" "$bin") --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    [ -x "${BIN[$key]}" ] || { echo "could not build $key" >&2; exit 2; }
done
failed=0
for t in "${TARGETS[@]}"; do
    read -r pkg bin name <<<"$t"
    [[ -n "$FILTER" && "$name" != *"$FILTER"* ]] && continue
    key="$pkg/$bin"
    start=$(date +%s%N)
    if PROPTEST_CASES="$CASES" nice -n "${FUZZ_NICE:-15}" "${BIN[$key]}" --exact "$name" --test-threads 1 -q >"/tmp/fuzz-$name.log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed=1
    fi
    ms=$((($(date +%s%N) - start) / 1000000))
    printf '%-55s %10s cases %6d.%01d s  %s\n' "$name" "$CASES" $((ms / 1000)) $((ms % 1000 / 100)) "$status"
    [ "$status" = ok ] || tail -30 "/tmp/fuzz-$name.log"
done
exit "$failed"
