# Shared helpers for scripts/: install what a script needs when it is missing.

# need_packages COMMAND:DEBIAN_PACKAGE ...: apt-get installs the packages whose command is missing.
need_packages() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "${missing[@]}"
}

# apt_install DEBIAN_PACKAGE ...: installs the packages (with sudo when not root).
apt_install() {
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing: $*" >&2
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

# The cache of the cargo tools the scripts build (cargo-deb, cargo-generate-rpm, hyperfine): one
# directory outside the clone, never ~/.cargo/bin. Remove it to reclaim the space.
DEV_CACHE=${KUBEX_CRED_DEV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubex-cred-dev}

# dev_tool COMMAND CRATE VERSION: makes COMMAND available, built once into $DEV_CACHE (a COMMAND
# already on PATH is used as it is).
dev_tool() {
  local command=$1 crate=$2 version=$3
  export PATH="$DEV_CACHE/bin:$PATH"
  command -v "$command" >/dev/null 2>&1 && return 0
  echo "building $crate $version into $DEV_CACHE (once)" >&2
  CARGO_TARGET_DIR="$DEV_CACHE/build" cargo install --quiet --locked --root "$DEV_CACHE" --version "$version" "$crate" >&2
}

# need_rust_components NAME ...: rustup adds the toolchain components that are missing.
need_rust_components() {
  local c
  for c in "$@"; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" >&2
  done
}

# private_keyring DIR: starts a D-Bus session and an unlocked gnome-keyring under DIR, and exports
# HOME, XDG dirs and DBUS_SESSION_BUS_ADDRESS for them; stop_private_keyring ends it.
private_keyring() {
  local dir=$1
  mkdir -p "$dir/home" "$dir/config" "$dir/run" && chmod 700 "$dir/run"
  export HOME="$dir/home" XDG_CONFIG_HOME="$dir/config" XDG_RUNTIME_DIR="$dir/run"
  dbus-daemon --session --fork --print-address=1 --print-pid=3 --address="unix:path=$dir/bus" \
    >"$dir/bus.address" 3>"$dir/bus.pid" 2>/dev/null
  DBUS_SESSION_BUS_ADDRESS=$(head -n1 "$dir/bus.address")
  export DBUS_SESSION_BUS_ADDRESS
  printf 'throwaway' | gnome-keyring-daemon --unlock --components=secrets >/dev/null
}

stop_private_keyring() {
  local dir=$1
  [ -f "$dir/bus.pid" ] && kill "$(cat "$dir/bus.pid")" 2>/dev/null || true
}
