#!/usr/bin/env bash
# Mesa 25 (Debian bookworm-backports) beside the system's Mesa 22.3.6, for MetaDrive's offscreen
# renderer: llvmpipe 22.3.6 hangs on some scenes (docs/closed_loop_progress/README.md), 25.0.7 does
# not on the known reproducers. The packages are unpacked into a folder of their own (nothing is
# installed system-wide, so processes started without the env file keep Mesa 22), checked against
# the archive's SHA256 sums, and an env file points the EGL loader and the dynamic linker at them:
#
#   bash scripts/mesa_backport.sh                       # -> .venv-metadrive/mesa-backport/
#   . .venv-metadrive/mesa-backport/mesa.env             # in the shell that starts MetaDrive
#
# Its images are not those of Mesa 22 (about half of the pixels differ by a few levels), so a data set
# or closed-loop run must use one Mesa throughout: switching is a new closed-loop protocol version.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${DEST:-$ROOT/.venv-metadrive/mesa-backport}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm-backports
VERSION=25.0.7-2~bpo12+1
PACKAGES="mesa-libgallium libegl-mesa0 libgl1-mesa-dri libgbm1 libdrm2 libdrm-common libdrm-amdgpu1 libdrm-intel1"

if [ -f "$DEST/mesa.env" ] && grep -q "$VERSION" "$DEST/mesa.env"; then
  echo "[mesa_backport] $DEST holds Mesa $VERSION; nothing to do"
  exit 0
fi
mkdir -p "$DEST/debs"
echo "[mesa_backport] reading the $SUITE package index"
curl -fsS -m 120 "$MIRROR/dists/$SUITE/main/binary-amd64/Packages.xz" | xz -dc > "$DEST/Packages"
for pkg in $PACKAGES; do
  line=$(awk -v p="$pkg" '
    $1 == "Package:" { hit = ($2 == p) } hit && $1 == "Version:" { v = $2 }
    hit && $1 == "Filename:" { f = $2 } hit && $1 == "SHA256:" { s = $2 }
    /^$/ && hit && f { print f, s, v; exit }' "$DEST/Packages")
  [ -n "$line" ] || { echo "[mesa_backport] $SUITE has no package $pkg" >&2; exit 1; }
  read -r file sha version <<< "$line"
  case $pkg in libdrm*) ;; *) [ "$version" = "$VERSION" ] || {
    echo "[mesa_backport] $SUITE now has $pkg $version, not $VERSION: update VERSION here after checking it" >&2
    exit 1; } ;; esac
  deb="$DEST/debs/$(basename "$file")"
  echo "[mesa_backport] $pkg $version"
  curl -fsS -m 300 -o "$deb" "$MIRROR/$file"
  echo "$sha  $deb" | sha256sum -c --quiet
  dpkg-deb -x "$deb" "$DEST/root"
done
LIB="$DEST/root/usr/lib/x86_64-linux-gnu"
cat > "$DEST/egl_vendor.json" <<EOF
{"file_format_version": "1.0.0", "ICD": {"library_path": "$LIB/libEGL_mesa.so.0"}}
EOF
cat > "$DEST/mesa.env" <<EOF
# Mesa $VERSION from $SUITE (scripts/mesa_backport.sh); source it before starting MetaDrive
export LD_LIBRARY_PATH="$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export LIBGL_DRIVERS_PATH="$LIB/dri"
export __EGL_VENDOR_LIBRARY_FILENAMES="$DEST/egl_vendor.json"
EOF
rm -rf "$DEST/debs" "$DEST/Packages"
echo "[mesa_backport] ready: . $DEST/mesa.env"
