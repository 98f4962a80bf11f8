#!/usr/bin/env bash
# Builds nbackup-agent_<version>_<arch>.deb and nbackup-server_<version>_<arch>.deb into $OUTDIR
# (default dist/) with dpkg-deb, from this checkout: the command's bundle (dist/cmd/nbackup-*.js from
# npm run build: our code and the npm packages it uses, packaging/bundle.mjs), the native addons
# (build/Release) and the Node.js runtime running this script (Debian 12 ships Node.js 18, too old),
# each package under /usr/lib/nbackup/<agent|server>/, with the bundled packages' licence texts.
#
#   packaging/build-deb.sh              # both packages into dist/
#   OUTDIR=/tmp/debs packaging/build-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUTDIR=${OUTDIR:-$ROOT/dist}
VERSION=$(node -p 'require("./package.json").version')
ARCH=$(dpkg --print-architecture)
NODE_BIN=${NODE_BIN:-$(command -v node)}
MAINTAINER="n-backup developers <dev@n-backup.org>"

[ -d dist/cmd ] || { echo "build-deb: dist/ is missing; run npm ci (or npm run build) first" >&2; exit 1; }
for addon in nbackup_codec nbackup_fs; do
  [ -f "build/Release/$addon.node" ] || { echo "build-deb: build/Release/$addon.node is missing: install the -dev packages of the README, then npm ci" >&2; exit 1; }
done
for pkg in nbackup-agent nbackup-server; do
  [ -f "dist/cmd/$pkg.packages.json" ] || { echo "build-deb: dist/cmd/$pkg.js is not bundled; run npm run build" >&2; exit 1; }
done
mkdir -p "$OUTDIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The npm packages inside a bundle: name, version, licence, then each licence or notice file whole.
bundled_licences() {
  node -e '
    const fs = require("fs");
    const list = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    let out = "The npm packages bundled in /usr/lib/nbackup/*/dist/cmd/*.js, with their licence texts.\n";
    for (const p of list) {
      out += `\n${"=".repeat(78)}\n${p.name} ${p.version} (${p.license})\n${"=".repeat(78)}\n`;
      for (const f of p.files) out += `\n--- ${f.replace(/^node_modules\//, "")}\n\n${fs.readFileSync(f, "utf8").trimEnd()}\n`;
    }
    process.stdout.write(out);
  ' "$1"
}

build_one() {
  local role=$1 summary=$2
  local pkg=nbackup-$role
  local tree=$WORK/$pkg
  local lib=$tree/usr/lib/nbackup/$role
  mkdir -p "$lib/build/Release" "$tree/usr/bin" "$tree/etc/nbackup" "$tree/lib/systemd/system" \
    "$tree/usr/share/man/man1" "$tree/usr/share/doc/$pkg" "$tree/DEBIAN"
  # JavaScript: the one bundle that runs (no tests, no benchmark, no source maps). package.json
  # marks the package root, where the addons are found.
  install -D -m 0644 "dist/cmd/$pkg.js" "$lib/dist/cmd/$pkg.js"
  install -m 0644 package.json "$lib/package.json"
  bundled_licences "dist/cmd/$pkg.packages.json" | gzip -9n > "$tree/usr/share/doc/$pkg/npm-packages.txt.gz"
  install -m 0644 build/Release/nbackup_codec.node build/Release/nbackup_fs.node "$lib/build/Release/"
  strip --strip-unneeded --remove-section=.comment --remove-section=.note "$lib"/build/Release/*.node
  install -m 0755 "$NODE_BIN" "$lib/node"
  strip --strip-unneeded --remove-section=.comment "$lib/node"
  printf '#!/bin/sh\nexec /usr/lib/nbackup/%s/node /usr/lib/nbackup/%s/dist/cmd/%s.js "$@"\n' "$role" "$role" "$pkg" > "$tree/usr/bin/$pkg"
  chmod 0755 "$tree/usr/bin/$pkg"
  install -m 0640 "configs/$role.example.yaml" "$tree/etc/nbackup/$role.yaml"
  install -m 0644 "packaging/systemd/$pkg.service" "$tree/lib/systemd/system/$pkg.service"
  gzip -9n < "dist/man/$pkg.1" > "$tree/usr/share/man/man1/$pkg.1.gz"
  install -m 0644 packaging/debian/copyright "$tree/usr/share/doc/$pkg/copyright"
  sed "s/@PKG@/$pkg/; s/@VERSION@/$VERSION/; s/@MAINTAINER@/$MAINTAINER/; s/@DATE@/$(date -R -d @${SOURCE_DATE_EPOCH:-$(date +%s)})/" \
    packaging/debian/changelog.in | gzip -9n > "$tree/usr/share/doc/$pkg/changelog.gz"
  mkdir -p "$tree/usr/share/lintian/overrides"
  sed "s/@PKG@/$pkg/g; s/@ROLE@/$role/g" packaging/debian/lintian-overrides.in > "$tree/usr/share/lintian/overrides/$pkg"
  chmod 0644 "$tree/usr/share/lintian/overrides/$pkg"
  find "$tree/usr/lib/nbackup" -type d -exec chmod 0755 {} +
  find "$tree/usr/lib/nbackup" -type f ! -name node ! -name '*.node' -exec chmod 0644 {} +
  # The entry points run on the packaged runtime through /usr/bin/$pkg, never on a system `node`:
  # their shebang becomes a comment (same line count).
  sed -i "1s|^#!/usr/bin/env node\$|// run by /usr/bin/nbackup-* with /usr/lib/nbackup/$role/node|" "$lib"/dist/cmd/*.js

  local size
  size=$(du -sk --exclude=DEBIAN "$tree" | cut -f1)
  cat > "$tree/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $size
Depends: adduser, libc6 (>= 2.36), libstdc++6, libgcc-s1, libisal2, libdeflate0, libzstd1
Section: admin
Priority: optional
Homepage: https://localhost/n-backup
Description: $summary
 n-backup streams tar archives (gzip or zstd, compressed in parallel) over
 mutual TLS 1.3 from agents to a server that verifies SHA-256 inline and
 writes atomically. Archives are plain .tar.gz / .tar.zst files.
 .
 This package carries its own Node.js runtime under /usr/lib/nbackup/$role.
CONTROL
  echo "/etc/nbackup/$role.yaml" > "$tree/DEBIAN/conffiles"
  sed "s/@ROLE@/$role/g; s/@PKG@/$pkg/g" packaging/debian/postinst.in > "$tree/DEBIAN/postinst"
  sed "s/@ROLE@/$role/g; s/@PKG@/$pkg/g" packaging/debian/postrm.in > "$tree/DEBIAN/postrm"
  sed "s/@ROLE@/$role/g; s/@PKG@/$pkg/g" packaging/debian/prerm.in > "$tree/DEBIAN/prerm"
  chmod 0755 "$tree/DEBIAN/postinst" "$tree/DEBIAN/postrm" "$tree/DEBIAN/prerm"
  dpkg-deb --root-owner-group -Zgzip --build "$tree" "$OUTDIR/${pkg}_${VERSION}_${ARCH}.deb" >/dev/null
  echo "$OUTDIR/${pkg}_${VERSION}_${ARCH}.deb"
}

build_one agent "streaming backup agent (tar, parallel compression, mTLS)"
build_one server "streaming backup server (mTLS, inline SHA-256, atomic writes)"
