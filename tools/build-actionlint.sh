#!/usr/bin/env bash
# Builds actionlint (the GitHub Actions workflow linter) from the Go module proxy at a pinned
# version, into a cache outside the checkout keyed by version, so a fresh clone on the same
# machine reuses it (like tools/build-pulumi.sh). Prints the binary's path on stdout; go's
# output goes to a log beside it, and its last lines to stderr on a failure.
set -euo pipefail

version=v1.7.12
dir=${XDG_CACHE_HOME:-$HOME/.cache}/bulletproof-mail/actionlint-$version
bin=$dir/bin/actionlint
logf=$dir/build.log

if [ ! -x "$bin" ]; then
  mkdir -p "$dir/bin"
  echo "build-actionlint: building actionlint $version (under a minute cold; log: $logf)" >&2
  start=$SECONDS
  # GOBIN into a temporary directory, then one rename: an interrupted build leaves no binary.
  rm -rf "$dir/bin.tmp" && mkdir -p "$dir/bin.tmp"
  if ! GOBIN=$dir/bin.tmp go install -trimpath "github.com/rhysd/actionlint/cmd/actionlint@$version" >"$logf" 2>&1 </dev/null; then
    echo "build-actionlint: FAILED; the last 20 lines of $logf:" >&2
    tail -n 20 "$logf" | sed 's/^/  | /' >&2
    exit 1
  fi
  mv "$dir/bin.tmp/actionlint" "$bin" && rmdir "$dir/bin.tmp"
  echo "build-actionlint: done in $((SECONDS - start)) s" >&2
fi
echo "$bin"
