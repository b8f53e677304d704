#!/usr/bin/env bash
# make preview: writes the demo's messages (email HTML and text, Slack
# blocks, webhook event, chart PNG, PDF) to .local/preview with the real
# code, then screenshots the email in headless Chromium at desktop and
# phone widths, and in dark mode. Installs Debian's chromium (and the CJK
# font the PDF embeds, so the browser can show the same names) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.local/preview
if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -qi "droid sans fallback"; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-droid-fallback >/dev/null
fi
cargo build -q -p report-delivery-local
rm -rf "$out"
./target/debug/local preview "$out"
shot() { # name width height [extra flags]
  local name=$1 w=$2 h=$3; shift 3
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --force-device-scale-factor=1 --window-size="$w,$h" "$@" \
    --screenshot="$PWD/$out/$name" "file://$PWD/$out/email.html" >/dev/null 2>&1
  echo "$out/$name (${w}x${h})"
}
shot email-desktop.png 800 1000
shot email-phone.png 390 1150
shot email-dark.png 800 1000 --force-dark-mode --enable-features=WebContentsForceDark:inversion_method/cielab_based
