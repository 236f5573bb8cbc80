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
#                               before it counts as TIMED OUT (default 5: the
#                               coverage run builds everything with -cover, a
#                               mutant's run only its package, so 5 is a wide
#                               margin, and a hung mutant costs 5 such runs)
#   MUTATE_OUT                  where the per-package JSON results go
#                               (default mutate.out/)
#   MUTATE_DRY_RUN=1            only list the mutants (gremlins --dry-run)
#   ENVOY_BIN                   Envoy for the tests (default .tools/bin/envoy,
#                               made absolute: gremlins runs the tests in a copy)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
gremlins=${GREMLINS:-$root/.tools/bin/gremlins}
coef=${MUTATE_TIMEOUT_COEFFICIENT:-5}
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

# A target is a package (./admin) or a package and a part of it
# (./xds:check, ./cohort:engine), so that no run takes much more than ten
# minutes on a shared 2-core machine; each is one gremlins run with its own
# score. For each,
# files_excluded prints the gremlins --exclude-files regexps (matched against
# file paths relative to the package directory) and tests_skipped a go test
# -skip regexp, for tests of files that the run does not mutate and that
# would only make every mutant slower. A target not listed is its package
# whole, with all its tests.
# xds/translate holds the pure translation; the ADS server is xds/server.
xds_other='node|bootstrap|render|types|rls_|incremental'
# cohort is split in four runs of a few minutes each; cohort:parts takes
# every file the others do not name (a new file lands there).
cohort_compile='cohort|compile'
cohort_engine='engine|rules|hash|cache'
cohort_redis='redis|redisurl'
# The slowest tests of the Redis store alone (URL forms, outages and
# recovery, state-change logging), over half a second each: only
# cohort:redis runs them.
cohort_redis_tests='TestRedisURLForms|TestRedisStoreStartsDownAndRecovers|TestRedisOutage|TestStoreStateChangesLoggedOnceWithoutUserIDs'
# The streams' bounds test holds 10,000 streams past their idle timeout
# (about 13 s): only extproc:server runs it.
extproc_bounds_tests='TestIdleAndExcessStreamsAreBounded|TestHoldStreamsHelper'
files_excluded() {
	case "$1" in
	# xds/translate: the Envoy/gRPC configuration it builds and checks;
	# the node, bootstrap and render files are left for another run.
	./xds/translate) echo "^($xds_other)[a-z_]*\\.go\$" ;;
	./xds/translate:check) echo "^($xds_other|build)[a-z_]*\\.go\$" ;;
	./xds/translate:build) echo "^($xds_other|check)[a-z_]*\\.go\$" ;;
	# cohort/picktest is a test helper (the documented rule, written apart
	# from the engine), not product code.
	./cohort) echo '^picktest/' ;;
	./cohort:compile) echo "^picktest/|^($cohort_engine|$cohort_redis|shadows|store|userkey)\\.go\$" ;;
	./cohort:engine) echo "^picktest/|^($cohort_compile|$cohort_redis|shadows|store|userkey)\\.go\$" ;;
	./cohort:redis) echo "^picktest/|^($cohort_compile|$cohort_engine|shadows|store|userkey)\\.go\$" ;;
	./cohort:parts) echo "^picktest/|^($cohort_compile|$cohort_engine|$cohort_redis)\\.go\$" ;;
	# extproc/extproctest is a test client, not product code. extproc is
	# split in two: the streams, their bounds and counters (server.go,
	# counters.go), and the observe filter (observe.go), whose run skips
	# the streams' slow bounds test.
	./extproc) echo '^extproctest/' ;;
	./extproc:server) echo '^extproctest/|^observe\.go$' ;;
	./extproc:observe) echo '^extproctest/|^(server|counters)\.go$' ;;
	# control, control/live (the rules of a change), control/persist (the
	# stores) and control/httpapi (the admin API) are each mutated whole;
	# gremlins would take the sub-packages' files into ./control too (and
	# run only control's tests on them), so ./control leaves them out.
	./control) echo '^(live|persist|httpapi)/' ;;
	# stats: the windows, counters and Prometheus export, and apart the
	# publishing of windows to Redis and their merging over replicas.
	./stats:recorder) echo '^redis\.go$' ;;
	./stats:redis) echo '^(recorder|counts|prom)\.go$' ;;
	# rollout: the gates, routes, lease and PromQL client, and apart the
	# manager with its plans and evidence (its tests simulate whole
	# rollouts: the package whole takes over half an hour).
	./rollout:gates) echo '^(manager|plan|results|statglue)\.go$' ;;
	./rollout:manager) echo '^(gates|http|lease|promql)\.go$' ;;
	esac
}
tests_skipped() {
	case "$1" in
	./cohort:compile | ./cohort:engine | ./cohort:parts) echo "^($cohort_redis_tests)\$" ;;
	./extproc:observe) echo "^($extproc_bounds_tests)\$" ;;
	esac
}

# The whole module, minus what the tests do not need, is copied for gremlins
# (it copies its source directory again per worker and runs the tests there).
stage=$(mktemp -d "${TMPDIR:-/tmp}/modelsplit-mutate-XXXXXX")
trap 'rm -rf "$stage"' EXIT
tar -C "$root" --exclude=./.tools --exclude=./bin --exclude=./.git --exclude=./mutate.out -cf - . | tar -C "$stage" -xf -

summary=()
for target in "$@"; do
	target=./${target#./}
	pkg=${target%%:*}
	pkg=${pkg%/}
	[ "$target" = "${target#*:}" ] && target=$pkg || target=$pkg:${target#*:}
	name=$(echo "${target#./}" | tr /: --)
	if ! compgen -G "$pkg/*_test.go" >/dev/null; then
		# gremlins runs only the mutated package's own tests.
		line="$target: no tests in the package itself, so every mutant would survive (tests elsewhere, e.g. in test/, are not run by gremlins): not run"
		echo "$line"
		summary+=("$line")
		continue
	fi
	excl=()
	while read -r re; do [ -n "$re" ] && excl+=(--exclude-files "$re"); done < <(files_excluded "$target")
	skip=$(tests_skipped "$target")
	echo "=== mutate $target (timeout coefficient $coef${excl[*]:+, ${excl[*]}}${skip:+, go test -skip '$skip'})"
	start=$(date +%s)
	(cd "$stage" && GOFLAGS="$GOFLAGS${skip:+ -skip=$skip}" nice -n 19 "$gremlins" unleash \
		--workers 1 --timeout-coefficient "$coef" \
		--invert-logical --invert-loopctrl \
		${MUTATE_DRY_RUN:+--dry-run} \
		"${excl[@]}" \
		--output "$out/$name.json" \
		"$pkg") >"$out/$name.log" 2>&1 || { echo "gremlins failed on $pkg (log: $out/$name.log)"; tail -20 "$out/$name.log"; summary+=("$target: gremlins failed"); continue; }
	# gremlins reports mutants in switch case expressions NOT COVERED (Go's
	# cover blocks leave them out): run those too.
	if [ -z "${MUTATE_DRY_RUN:-}" ]; then
		GOFLAGS="$GOFLAGS${skip:+ -skip=$skip}" python3 "$root/scripts/mutate-recheck.py" "$out/$name.json" "$out/$name.log" "$stage" "${pkg#./}" "$coef" | tee -a "$out/$name.log"
	fi
	secs=$(($(date +%s) - start))
	line=$(jq -r --arg pkg "$target" --arg secs "$secs" '
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
