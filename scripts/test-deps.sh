#!/usr/bin/env bash
# Installs the system tools the render tests use to check PDFs independently
# (qpdf, and pdftotext/pdfinfo from poppler-utils), from Debian's packages.
set -euo pipefail
if command -v qpdf >/dev/null && command -v pdftotext >/dev/null && command -v pdfinfo >/dev/null && command -v pdffonts >/dev/null; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qpdf poppler-utils >/dev/null
