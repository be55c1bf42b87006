#!/bin/bash
# Install gatewayd on one box: the package, a site config validated BEFORE it replaces the
# current one, its secrets as systemd credentials, then enable --now (or reload/restart).
#
# Usage: deploy/install.sh [options] CONFIG.yaml
#   --deb FILE       install this package first (dpkg -i; it needs no network)
#   --models DIR     install DIR/*.yaml as device models (added to / replacing the current)
#   --secret FILE    install FILE next to the config, root-only, as a credential named after
#                    the file; refer to it by name (device_secret_file: gateway.secret).
#                    Repeatable. Secret files must be named *.secret.
#   --no-start       install and validate only; do not enable, start or reload the service
#
# A config that fails `gatewayd check` exits 78 and changes nothing.
# For tests the paths and tools can be redirected: GATEWAYD_ETC (/etc/gatewayd),
# GATEWAYD_BIN (/usr/bin/gatewayd), SYSTEMD_DIR (/etc/systemd/system), SYSTEMCTL (systemctl).
set -euo pipefail

etc=${GATEWAYD_ETC:-/etc/gatewayd}
gatewayd=${GATEWAYD_BIN:-/usr/bin/gatewayd}
systemd_dir=${SYSTEMD_DIR:-/etc/systemd/system}
systemctl=${SYSTEMCTL:-systemctl}
unit=gatewayd.service
EX_USAGE=64
EX_CONFIG=78

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "$0" >&2
    exit "${1:-$EX_USAGE}"
}

deb=""
models=""
start=yes
config=""
secrets=()
while (($#)); do
    case "$1" in
        --deb) deb=${2:?--deb needs a file}; shift 2 ;;
        --models) models=${2:?--models needs a directory}; shift 2 ;;
        --secret) secrets+=("${2:?--secret needs a file}"); shift 2 ;;
        --no-start) start=no; shift ;;
        -h|--help) usage 0 ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *) [[ -z "$config" ]] || usage; config=$1; shift ;;
    esac
done
[[ -n "$config" ]] || usage
[[ -f "$config" ]] || { echo "no such config file: $config" >&2; exit "$EX_USAGE"; }
for secret in "${secrets[@]}"; do
    [[ -f "$secret" ]] || { echo "no such secret file: $secret" >&2; exit "$EX_USAGE"; }
    [[ "$secret" == *.secret ]] || { echo "secret files must be named *.secret: $secret" >&2; exit "$EX_USAGE"; }
done

if [[ -n "$deb" ]]; then
    echo "installing $deb"
    dpkg -i "$deb" || {
        echo "dpkg could not install $deb; missing dependencies? try: apt-get -f install" >&2
        exit 1
    }
fi

# 1. Stage the complete new config (config, models, secrets) in a root-only directory.
mkdir -p "$etc"
staging=$(mktemp -d "$etc/.staging.XXXXXX")
trap 'rm -rf "$staging"' EXIT
chmod 0700 "$staging"
mkdir "$staging/models"
if [[ -d "$etc/models" ]]; then
    find "$etc/models" -maxdepth 1 -name '*.yaml' -type f -exec cp -p {} "$staging/models/" \;
fi
if [[ -n "$models" ]]; then
    cp "$models"/*.yaml "$staging/models/"
fi
for existing in "$etc"/*.secret; do
    if [[ -f "$existing" ]]; then cp -p "$existing" "$staging/"; fi
done
for secret in "${secrets[@]}"; do
    install -m 0600 "$secret" "$staging/$(basename "$secret")"
done
install -m 0600 "$config" "$staging/gatewayd.yaml"

# 2. Validate it where it stands: relative models_dir and secret files resolve in staging.
if ! "$gatewayd" check "$staging/gatewayd.yaml" >/dev/null; then
    echo "gatewayd check rejected $config: nothing was changed" >&2
    exit "$EX_CONFIG"
fi

# 3. Move it into place; the config last and by rename, so it is never half-written.
mkdir -p "$etc/models"
if [[ -n "$models" ]]; then
    install -m 0644 "$staging"/models/*.yaml "$etc/models/"
fi
for secret in "${secrets[@]}"; do
    install -m 0600 -o root -g root "$staging/$(basename "$secret")" "$etc/$(basename "$secret")"
done
# The config may hold inline secrets: readable by root and the service's group only (as the
# package installs it). Before the package has created the group, root's group stands in.
config_group=root
if getent group gatewayd >/dev/null; then config_group=gatewayd; fi
install -m 0640 -o root -g "$config_group" "$staging/gatewayd.yaml" "$etc/.gatewayd.yaml.new"
mv -f "$etc/.gatewayd.yaml.new" "$etc/gatewayd.yaml"
echo "installed $etc/gatewayd.yaml"

# 4. Every *.secret next to the config becomes a systemd credential of the same name.
dropin_dir=$systemd_dir/$unit.d
dropin=$dropin_dir/10-credentials.conf
mkdir -p "$dropin_dir"
{
    echo "# Written by deploy/install.sh: secret files handed to gatewayd as credentials."
    echo "[Service]"
    for existing in "$etc"/*.secret; do
        if [[ -f "$existing" ]]; then echo "LoadCredential=$(basename "$existing"):$existing"; fi
    done
} > "$dropin.new"
dropin_changed=no
if ! cmp -s "$dropin.new" "$dropin" 2>/dev/null; then dropin_changed=yes; fi
mv -f "$dropin.new" "$dropin"
chmod 0644 "$dropin"

[[ "$start" == yes ]] || { echo "not starting ($unit left as it was)"; exit 0; }
"$systemctl" daemon-reload
if "$systemctl" is-active --quiet "$unit"; then
    if [[ "$dropin_changed" == yes || ${#secrets[@]} -gt 0 || -n "$deb" ]]; then
        "$systemctl" restart "$unit"   # credentials and code are read at start only
    else
        "$systemctl" reload "$unit"    # config and models: applied without a restart
    fi
else
    "$systemctl" enable --now "$unit"
fi
"$systemctl" --no-pager status "$unit" || true
