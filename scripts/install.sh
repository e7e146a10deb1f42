#!/usr/bin/env bash
# Builds pkm-convert in release mode and installs it with its shell completions under PREFIX.
# Usage: scripts/install.sh PREFIX [SWIFT]   (make install [PREFIX=/usr/local])
set -euo pipefail
prefix="${1:-/usr/local}"
swift="${2:-swift}"
"$swift" build -c release --product pkm-convert
bin="$("$swift" build -c release --show-bin-path)/pkm-convert"
SUDO=""
if ! mkdir -p "$prefix/bin" 2>/dev/null || [ ! -w "$prefix/bin" ]; then
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
fi
bash_dir="$prefix/share/bash-completion/completions"
zsh_dir="$prefix/share/zsh/site-functions"
fish_dir="$prefix/share/fish/vendor_completions.d"
$SUDO mkdir -p "$prefix/bin" "$bash_dir" "$zsh_dir" "$fish_dir"
$SUDO install -m 755 "$bin" "$prefix/bin/pkm-convert"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bin" --generate-completion-script bash > "$tmp/pkm-convert"
"$bin" --generate-completion-script zsh > "$tmp/_pkm-convert"
"$bin" --generate-completion-script fish > "$tmp/pkm-convert.fish"
$SUDO install -m 644 "$tmp/pkm-convert" "$bash_dir/pkm-convert"
$SUDO install -m 644 "$tmp/_pkm-convert" "$zsh_dir/_pkm-convert"
$SUDO install -m 644 "$tmp/pkm-convert.fish" "$fish_dir/pkm-convert.fish"
echo "installed $prefix/bin/pkm-convert ($("$prefix/bin/pkm-convert" --version)) and completions in $bash_dir/pkm-convert, $zsh_dir/_pkm-convert, $fish_dir/pkm-convert.fish"
case ":$PATH:" in
    *":$prefix/bin:"*) ;;
    *) echo "$prefix/bin is not on PATH: add it with  export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
