#!/usr/bin/env bash
# Mutation testing: run gremlins over each package given (./admin ./xds ...),
# one package at a time, one worker, under nice; print each package's score
# and its surviving mutants. `make mutate` calls this; `make mutate PKGS=./admin`
# narrows it. Not part of `make test`.
#
# What each package mutates is set in the table in files_excluded below: a
# package not in it is mutated whole (so adding ./stats or ./rollout to PKGS
# needs nothing more); a package with slow tests can leave files out or
# select its tests there.
#
# Environment:
#   GREMLINS                    the gremlins binary (default .tools/bin/gremlins)
#   MUTATE_TIMEOUT_COEFFICIENT  a mutant's `go test` (build included) may take
#                               this many times the package's coverage run
#                               before it counts as TIMED OUT (default 10)
#   MUTATE_OUT                  where the per-package JSON results go
#                               (default mutate.out/)
#   MUTATE_DRY_RUN=1            only list the mutants (gremlins --dry-run)
#   ENVOY_BIN                   Envoy for the tests (default .tools/bin/envoy,
#                               made absolute: gremlins runs the tests in a copy)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
gremlins=${GREMLINS:-$root/.tools/bin/gremlins}
coef=${MUTATE_TIMEOUT_COEFFICIENT:-10}
out=${MUTATE_OUT:-$root/mutate.out}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -z "${ENVOY_BIN:-}" ] && [ -x .tools/bin/envoy ]; then
	ENVOY_BIN=$(readlink -f .tools/bin/envoy)
fi
export ENVOY_BIN
# Never a cached test result: gremlins times the coverage run to set each
# mutant's timeout, and a cached run would make that timeout a few ms.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-count=1"

# files_excluded PKG prints the gremlins --exclude-files regexps for PKG
# (matched against file paths relative to the package directory).
files_excluded() {
	case "$1" in
	# xds: the Envoy/gRPC configuration it builds and checks; the server,
	# NACK, node and bootstrap files are exercised through streams and
	# Envoy and are left for another run.
	./xds) echo '^(server|nack|node|bootstrap|render|version|types)[a-z_]*\.go$' ;;
	# cohort/picktest is a test helper (the documented rule, written apart
	# from the engine), not product code.
	./cohort) echo '^picktest/' ;;
	esac
}

# The whole module, minus what the tests do not need, is copied for gremlins
# (it copies its source directory again per worker and runs the tests there).
stage=$(mktemp -d "${TMPDIR:-/tmp}/modelsplit-mutate-XXXXXX")
trap 'rm -rf "$stage"' EXIT
tar -C "$root" --exclude=./.tools --exclude=./bin --exclude=./.git --exclude=./mutate.out -cf - . | tar -C "$stage" -xf -

summary=()
for pkg in "$@"; do
	pkg=./${pkg#./}
	pkg=${pkg%/}
	name=$(echo "${pkg#./}" | tr / -)
	excl=()
	while read -r re; do [ -n "$re" ] && excl+=(--exclude-files "$re"); done < <(files_excluded "$pkg")
	echo "=== mutate $pkg (timeout coefficient $coef${excl[*]:+, ${excl[*]}})"
	start=$(date +%s)
	(cd "$stage" && nice -n 19 "$gremlins" unleash \
		--workers 1 --timeout-coefficient "$coef" \
		--invert-logical --invert-loopctrl \
		${MUTATE_DRY_RUN:+--dry-run} \
		"${excl[@]}" \
		--output "$out/$name.json" \
		"$pkg") >"$out/$name.log" 2>&1 || { echo "gremlins failed on $pkg (log: $out/$name.log)"; tail -20 "$out/$name.log"; summary+=("$pkg: gremlins failed"); continue; }
	secs=$(($(date +%s) - start))
	line=$(jq -r --arg pkg "$pkg" --arg secs "$secs" '
		[.files[].mutations[]] as $m
		| ($m | map(select(.status == "KILLED")) | length) as $k
		| ($m | map(select(.status == "LIVED")) | length) as $l
		| ($m | map(select(.status == "TIMED OUT")) | length) as $t
		| ($m | map(select(.status == "NOT COVERED")) | length) as $nc
		| ($m | map(select(.status == "NOT VIABLE")) | length) as $nv
		| "\($pkg): \($k+$t) killed of \($k+$t+$l+$nc) (\(if $k+$t+$l+$nc > 0 then (($k+$t)*1000/($k+$t+$l+$nc)|floor)/10 else 100 end)%): \($k) failed a test, \($t) timed out; \($l) lived, \($nc) not covered; \($nv) not viable; \($secs)s"' "$out/$name.json")
	echo "$line"
	jq -r --arg dir "${pkg#./}" '.files[] | (if $dir == "." then "" else $dir + "/" end + .file_name) as $f | .mutations[] | select(.status == "LIVED" or .status == "NOT COVERED")
		| "  \(.status) \(.type) \($f):\(.line):\(.column)"' "$out/$name.json" | sort -t: -k1,1 -k2,2n
	summary+=("$line")
done

echo "=== mutation score (killed = a test failed or the mutant timed out; not covered counts as surviving)"
printf '%s\n' "${summary[@]}"
