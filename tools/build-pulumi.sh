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
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
version=v3.274.1
cache=${XDG_CACHE_HOME:-$HOME/.cache}/bulletproof-mail
bin=$cache/pulumi-$version/bin
stamp="-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version"

log() { echo "build-pulumi: $*" >&2; }

# A pulumi already on PATH wins when it is at least the pinned version (e.g. installed the
# usual way by a user with internet access); we still need our language host beside it.
have_cli=""
if existing=$(command -v pulumi 2>/dev/null) && [ "$existing" != "$bin/pulumi" ]; then
  v=$("$existing" version 2>/dev/null || true)
  if [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$version" "$v" | sort -V | head -n1)" = "$version" ]; then
    have_cli=$existing
  fi
fi

mkdir -p "$bin" "$cache/pulumi-$version/built"
build() {  # build MODULE_DIR PACKAGE OUTPUT_PATH (skipped when OUTPUT_PATH exists)
  local dir=$1 pkg=$2 out=$3
  [ -x "$out" ] && return 0
  log "building $(basename "$out") from $pkg (the CLI takes about 8 minutes cold on 2 cores)"
  local start=$SECONDS
  (cd "$here/$dir" && go build -trimpath -ldflags "-s -w $stamp" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
  log "built $(basename "$out") in $((SECONDS - start)) s"
}
# Our own tools are keyed by a hash of their sources too, so an edit rebuilds them.
own() {  # own MODULE_DIR NAME -> path of the built binary
  local hash
  hash=$(cd "$here/$1" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)
  echo "$cache/pulumi-$version/built/$2-$hash"
}

if [ -n "$have_cli" ]; then
  log "using $have_cli ($("$have_cli" version))"
  ln -sf "$have_cli" "$bin/pulumi"
else
  build pulumi-cli github.com/pulumi/pulumi/pkg/v3/cmd/pulumi "$bin/pulumi"
fi
langhost=$(own pulumi-language-python pulumi-language-python)
build pulumi-language-python . "$langhost"
cmp -s "$langhost" "$bin/pulumi-language-python" || install -m 0755 "$langhost" "$bin/pulumi-language-python"

sdk=$(cd "$here/pulumi-language-python" && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)
install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$bin/pulumi-language-python-exec"
install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$bin/pulumi-resource-pulumi-python"

# The Python SDK pulumi-command==1.2.1 asks the engine for resource plugin command 1.2.1, which
# upstream ships from a module the proxy does not serve: install ours under that name. It stays
# off PATH (the engine would warn about an "ambient" plugin); only the plugin cache holds it.
command=$(own pulumi-command-provider pulumi-resource-command)
build pulumi-command-provider . "$command"
pulumi_home=${PULUMI_HOME:-$cache/pulumi-home}
installed=$pulumi_home/plugins/resource-command-v1.2.1/pulumi-resource-command
if ! cmp -s "$command" "$installed"; then
  log "installing resource plugin command 1.2.1 into $pulumi_home"
  PULUMI_HOME=$pulumi_home PULUMI_SKIP_UPDATE_CHECK=true \
    "$bin/pulumi" plugin install resource command 1.2.1 --reinstall --file "$command" >&2
fi
echo "$bin"
