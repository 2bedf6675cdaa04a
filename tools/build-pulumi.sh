#!/usr/bin/env bash
# Builds the Pulumi engine pieces this project needs from the Go module proxy, at pinned
# versions, into a cache outside the checkout (keyed by version), so a fresh clone on the same
# machine reuses them. Prints the bin directory on stdout.
#   - pulumi                      CLI (github.com/pulumi/pulumi/pkg/v3/cmd/pulumi, tools/pulumi-cli)
#   - pulumi-language-python      our small language host (tools/pulumi-language-python)
#   - pulumi-language-python-exec and pulumi-resource-pulumi-python: the SDK's own launcher
#     scripts, taken from the github.com/pulumi/pulumi/sdk/v3 module download.
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

mkdir -p "$bin"
build() {  # build MODULE_DIR PACKAGE OUTPUT
  local dir=$1 pkg=$2 out=$3
  [ -x "$bin/$out" ] && return 0
  log "building $out ($pkg) - a cold CLI build takes about 8 minutes on 2 cores"
  local start=$SECONDS
  (cd "$here/$dir" && go build -trimpath -ldflags "-s -w $stamp" -o "$bin/$out.tmp" "$pkg")
  mv "$bin/$out.tmp" "$bin/$out"
  log "built $out in $((SECONDS - start)) s"
}

if [ -n "$have_cli" ]; then
  log "using $have_cli ($("$have_cli" version))"
  ln -sf "$have_cli" "$bin/pulumi"
else
  build pulumi-cli github.com/pulumi/pulumi/pkg/v3/cmd/pulumi pulumi
fi
build pulumi-language-python . pulumi-language-python

sdk=$(cd "$here/pulumi-language-python" && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)
install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$bin/pulumi-language-python-exec"
install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$bin/pulumi-resource-pulumi-python"
echo "$bin"
