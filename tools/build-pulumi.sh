#!/usr/bin/env bash
# Builds the Pulumi engine pieces this project needs from the Go module proxy, at pinned
# versions, into a cache outside the checkout (keyed by version), so a fresh clone on the same
# machine reuses them. Prints the bin directory on stdout.
#   - pulumi                      CLI (github.com/pulumi/pulumi/pkg/v3/cmd/pulumi, tools/pulumi-cli)
#   - pulumi-language-python      our small language host (tools/pulumi-language-python)
#   - pulumi-language-python-exec and pulumi-resource-pulumi-python: the SDK's own launcher
#     scripts, taken from the github.com/pulumi/pulumi/sdk/v3 module download.
#   - pulumi-resource-command     our stand-in for the pulumi-command 1.2.1 provider plugin
#     (tools/pulumi-command-provider), also installed into the plugin cache of $PULUMI_HOME.
# On stderr: one line when a stage starts and one when it ends (nothing for a cached stage);
# the output of go and pulumi goes to one log per stage under $cache/pulumi-$version/logs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
version=v3.274.1
cache=${XDG_CACHE_HOME:-$HOME/.cache}/bulletproof-mail
bin=$cache/pulumi-$version/bin
logs=$cache/pulumi-$version/logs
stamp="-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version"
heartbeat_every=${BUILD_PULUMI_HEARTBEAT:-60}  # seconds between "still running" lines (tests shorten it)

log() { echo "build-pulumi: $*" >&2; }
took() { local s=$1; if ((s < 60)); then echo "$s s"; else echo "$((s / 60)) min $((s % 60)) s"; fi; }

fail() {  # fail WHAT LOG STATUS [ELAPSED]
  log "$1: FAILED${4:+ after $(took "$4")} (exit $3); the last 20 lines of $2:"
  tail -n 20 "$2" | sed 's/^/  | /' >&2
  exit "$3"
}

# The CLI build is silent for minutes once its output goes to a log: say now and then that it
# is still alive. Background jobs of a script ignore Ctrl-C, hence the traps that stop it.
heartbeat=""
stop_heartbeat() { if [ -n "$heartbeat" ]; then kill "$heartbeat" 2>/dev/null || true; wait "$heartbeat" 2>/dev/null || true; heartbeat=""; fi; }
trap stop_heartbeat EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start_heartbeat() {  # start_heartbeat WHAT START_SECONDS
  local what=$1 start=$2
  # stdout closed so that "$(build-pulumi.sh)" does not wait for it; the sleep is killed with
  # the loop, so it keeps no pipe open either.
  (
    nap=""
    trap '[ -z "$nap" ] || kill "$nap" 2>/dev/null; exit 0' TERM
    while :; do
      sleep "$heartbeat_every" & nap=$!
      wait "$nap"
      log "$what: still running, $(took $((SECONDS - start))) so far"
    done
  ) >/dev/null &
  heartbeat=$!
}

stage() {  # stage NAME WHAT ESTIMATE CMD...: run CMD with its output in $logs/NAME.log only
  local name=$1 what=$2 estimate=$3; shift 3
  local logf=$logs/$name.log start=$SECONDS rc=0
  log "$what ($estimate; log: $logf)"
  printf '$ %s\n' "$*" >"$logf"
  start_heartbeat "$what" "$start"
  "$@" >>"$logf" 2>&1 </dev/null || rc=$?
  stop_heartbeat
  ((rc == 0)) || fail "$what" "$logf" "$rc" $((SECONDS - start))
  log "$what: done in $(took $((SECONDS - start)))"
}

# A pulumi already on PATH wins when it is at least the pinned version (e.g. installed the
# usual way by a user with internet access); we still need our language host beside it.
have_cli=""
if existing=$(command -v pulumi 2>/dev/null) && [ "$existing" != "$bin/pulumi" ]; then
  v=$("$existing" version 2>/dev/null || true)
  if [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$version" "$v" | sort -V | head -n1)" = "$version" ]; then
    have_cli=$existing
  fi
fi

mkdir -p "$bin" "$cache/pulumi-$version/built" "$logs"
build() {  # build MODULE_DIR PACKAGE OUTPUT_PATH WHAT ESTIMATE (skipped when OUTPUT_PATH exists)
  local dir=$1 pkg=$2 out=$3
  [ -x "$out" ] && return 0
  stage "$dir" "$4" "$5" go -C "$here/$dir" build -trimpath -ldflags "-s -w $stamp" -o "$out.tmp" "$pkg"
  mv "$out.tmp" "$out"
}
# Our own tools are keyed by a hash of their sources too, so an edit rebuilds them.
own() {  # own MODULE_DIR NAME -> path of the built binary
  local hash
  hash=$(cd "$here/$1" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)
  echo "$cache/pulumi-$version/built/$2-$hash"
}

if [ -n "$have_cli" ]; then
  log "using $have_cli ($v)"
  ln -sf "$have_cli" "$bin/pulumi"
else
  build pulumi-cli github.com/pulumi/pulumi/pkg/v3/cmd/pulumi "$bin/pulumi" \
    "building the pulumi CLI $version" "about 6-8 min cold on 2 cores"
fi
langhost=$(own pulumi-language-python pulumi-language-python)
build pulumi-language-python . "$langhost" "building our Python language host" "30 s-1 min cold on 2 cores"
cmp -s "$langhost" "$bin/pulumi-language-python" || install -m 0755 "$langhost" "$bin/pulumi-language-python"

# Runs on every call (instant once the module is downloaded), so it is not announced.
sdk=$(go -C "$here/pulumi-language-python" list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3 2>"$logs/sdk.log") ||
  fail "locating the pulumi SDK module" "$logs/sdk.log" $?
install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$bin/pulumi-language-python-exec"
install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$bin/pulumi-resource-pulumi-python"

# The Python SDK pulumi-command==1.2.1 asks the engine for resource plugin command 1.2.1, which
# upstream ships from a module the proxy does not serve: install ours under that name. It stays
# off PATH (the engine would warn about an "ambient" plugin); only the plugin cache holds it.
command=$(own pulumi-command-provider pulumi-resource-command)
build pulumi-command-provider . "$command" "building our command provider plugin" "45 s-2 min cold on 2 cores"
pulumi_home=${PULUMI_HOME:-$cache/pulumi-home}
installed=$pulumi_home/plugins/resource-command-v1.2.1/pulumi-resource-command
if ! cmp -s "$command" "$installed"; then
  stage plugin-install "installing resource plugin command 1.2.1 into $pulumi_home" "a few seconds" \
    env PULUMI_HOME="$pulumi_home" PULUMI_SKIP_UPDATE_CHECK=true \
    "$bin/pulumi" plugin install resource command 1.2.1 --reinstall --file "$command"
fi
echo "$bin"
