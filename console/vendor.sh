#!/usr/bin/env bash
# Refreshes the console's vendored uPlot (MIT) from the npm registry.
# The files are committed, so building Strata needs neither npm nor the
# network; run this only to change the version, then review the diff and
# commit it with the new SHA256SUMS.
#
#   console/vendor.sh          # fetch UPLOT_VERSION, check against SHA256SUMS
#   console/vendor.sh --update # fetch it and rewrite SHA256SUMS (new version)
set -euo pipefail
cd "$(dirname "$0")/vendor"

UPLOT_VERSION=1.6.32
FILES=(uPlot.esm.js uPlot.min.css)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# npm pack checks the tarball against the registry's integrity hash.
(cd "$tmp" && npm pack --silent "uplot@${UPLOT_VERSION}" >/dev/null)
tar -xzf "$tmp/uplot-${UPLOT_VERSION}.tgz" -C "$tmp"
for f in "${FILES[@]}"; do
  cp "$tmp/package/dist/$f" "$tmp/$f"
done
cp "$tmp/package/LICENSE" "$tmp/LICENSE.uPlot"

if [ "${1:-}" = "--update" ]; then
  (cd "$tmp" && sha256sum "${FILES[@]}" LICENSE.uPlot) > SHA256SUMS
  echo "uplot@${UPLOT_VERSION}: SHA256SUMS rewritten"
else
  # The registry must serve exactly the bytes recorded when they were
  # reviewed; a mismatch stops here and changes nothing.
  (cd "$tmp" && sha256sum --check --quiet "$OLDPWD/SHA256SUMS")
fi
for f in "${FILES[@]}" LICENSE.uPlot; do
  cp "$tmp/$f" "$f"
done
echo "uplot@${UPLOT_VERSION}: $(printf '%s ' "${FILES[@]}")vendored"
