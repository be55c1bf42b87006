#!/bin/bash
# Build dist/gatewayd_<version>_<arch>.deb with plain dpkg-deb (no debhelper).
#
# Usage: packaging/build-deb.sh [OUTDIR]          (default: dist)
# Env:   PIP_PYTHON  interpreter whose pip installs into the package venv
#                    (default: .venv/bin/python if present, else /usr/bin/python3)
#        WORKDIR     staging area (default: build/deb)
#        TARGET_PYTHON  the interpreter the venv is built on (default: /usr/bin/python3)
#
# Layout of the package:
#   /usr/lib/gatewayd/                self-contained venv on the system python3: gatewayd and
#                                     every dependency (systemd-python included), byte-compiled
#   /usr/bin/gatewayd                 wrapper: exec <its dir>/../lib/gatewayd/bin/python -I -m
#                                     gatewayd, so an extracted tree (dpkg -x) runs as well
#   /lib/systemd/system/gatewayd.service, /usr/lib/sysusers.d/, /usr/lib/tmpfiles.d/
#   /etc/gatewayd/gatewayd.yaml, /etc/gatewayd/models/*.yaml   conffiles (the example site,
#                                     spool moved to /var/lib/gatewayd)
#
# Everything is downloaded (or taken from pip's cache) HERE, at build time; installing the
# .deb needs no network and runs no pip. The venv is bound to the Python it was built on
# (/usr/bin/python3, 3.11 on Debian 12), hence Depends: python3 (>= 3.11), python3 (<< 3.12).
set -euo pipefail
# dpkg-deb wants 0755 directories in the package, whatever umask the builder has.
umask 022

repo=$(cd "$(dirname "$0")/.." && pwd)
outdir=$(realpath -m "${1:-$repo/dist}")
workdir=$(realpath -m "${WORKDIR:-$repo/build/deb}")
target_python=${TARGET_PYTHON:-/usr/bin/python3}
if [[ -z "${PIP_PYTHON:-}" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then PIP_PYTHON=$repo/.venv/bin/python
    else PIP_PYTHON=/usr/bin/python3; fi
fi

prefix=/usr/lib/gatewayd
version=$("$target_python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")
arch=$(dpkg --print-architecture)
py_minor=$("$target_python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
next_minor=$("$target_python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')
name=gatewayd_${version}_${arch}
stage=$workdir/$name
venv=$stage$prefix

echo "building $name.deb on Python $py_minor ($target_python)"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$outdir"

# 1. The venv, created where it is staged, then made location-independent (step 2).
"$target_python" -m venv --without-pip "$venv"
constraints=$workdir/constraints.txt
: > "$constraints"
if [[ "$PIP_PYTHON" != "$target_python" ]]; then
    # Ship the versions the test suite ran against (the dev venv's), minus gatewayd itself.
    "$PIP_PYTHON" -m pip freeze --exclude-editable --disable-pip-version-check \
        | grep -v -i -E '^(gatewayd|-e )|@ file:' > "$constraints" || true
fi
"$PIP_PYTHON" -m pip --python "$venv/bin/python" install --quiet --no-compile \
    --disable-pip-version-check --no-warn-script-location \
    --constraint "$constraints" "${repo}[systemd]"

# 2. Relocate: console scripts and pyvenv.cfg name the staging path; make them name $prefix.
grep -rlI --null -F "$venv" "$venv" | xargs -0 -r sed -i "s|$venv|$prefix|g"
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
if grep -rqI -F "$stage" "$venv"; then
    echo "error: staging path left in the venv:" >&2
    grep -rlI -F "$stage" "$venv" >&2
    exit 1
fi
# Byte-compile now: at run time ProtectSystem=strict keeps /usr read-only, so CPython could
# not cache bytecode and would recompile on every start of a small ARM box.
"$venv/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    -s "$stage" -p / "$venv/lib" >/dev/null

# 3. Entry point, unit, users, directories, example config, docs.
mkdir -p "$stage/usr/bin"
cat > "$stage/usr/bin/gatewayd" <<'EOF'
#!/bin/sh
# gatewayd lives in its own venv; -I keeps PYTHONPATH and user site-packages out of it.
here=$(dirname "$(readlink -f "$0")")
exec "$here/../lib/gatewayd/bin/python" -I -m gatewayd "$@"
EOF
chmod 0755 "$stage/usr/bin/gatewayd"
install -D -m 0644 "$repo/packaging/gatewayd.service" "$stage/lib/systemd/system/gatewayd.service"
install -D -m 0644 "$repo/packaging/sysusers.d/gatewayd.conf" "$stage/usr/lib/sysusers.d/gatewayd.conf"
install -D -m 0644 "$repo/packaging/tmpfiles.d/gatewayd.conf" "$stage/usr/lib/tmpfiles.d/gatewayd.conf"

install -d -m 0755 "$stage/etc/gatewayd/models"
# Relative paths in the example resolve next to the config; on a box the spool belongs in
# the unit's StateDirectory (/etc is read-only to the service).
sed -e 's|^\(  path: \)state/spool.db|\1/var/lib/gatewayd/spool.db|' \
    "$repo/config/gatewayd.yaml" > "$stage/etc/gatewayd/gatewayd.yaml"
if ! grep -q '^  path: /var/lib/gatewayd/spool.db' "$stage/etc/gatewayd/gatewayd.yaml"; then
    echo "error: could not point the example's spool.path at /var/lib/gatewayd" >&2
    exit 1
fi
# It may hold inline secrets: not world-readable (postinst gives it to group gatewayd).
chmod 0640 "$stage/etc/gatewayd/gatewayd.yaml"
install -m 0644 "$repo"/config/models/*.yaml "$stage/etc/gatewayd/models/"
install -D -m 0644 "$repo/README.md" "$stage/usr/share/doc/gatewayd/README.md"

# 4. Control files.
(cd "$stage" && find etc -type f | sort | sed 's|^|/|') > "$stage/DEBIAN/conffiles"
installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: gatewayd
Version: $version
Architecture: $arch
Maintainer: gatewayd maintainers <gatewayd@localhost>
Installed-Size: $installed_size
Depends: python3 (>= $py_minor), python3 (<< $next_minor), libsystemd0, systemd
Section: net
Priority: optional
Homepage: file:///usr/share/doc/gatewayd/README.md
Description: Modbus TCP/RTU edge gateway to Envision EnOS with a store-and-forward spool
 gatewayd polls Modbus TCP, RTU (RS-485) and RTU-over-TCP devices, maps registers to EnOS
 measurepoints and events through YAML device models, commits every sample to a local
 SQLite spool and delivers it over one gateway MQTT connection, backfilling after outages.
 .
 The daemon and all its Python dependencies are bundled in /usr/lib/gatewayd; the package
 installs offline. The service is not started on install: edit /etc/gatewayd/gatewayd.yaml,
 run "gatewayd check /etc/gatewayd/gatewayd.yaml", then "systemctl enable --now gatewayd".
EOF
for script in postinst prerm postrm; do
    install -m 0755 "$repo/packaging/debian/$script" "$stage/DEBIAN/$script"
done

# 5. The archive: root-owned files whatever user builds it; gzip keeps the build quick.
deb=$outdir/$name.deb
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >/dev/null
echo "$deb"
