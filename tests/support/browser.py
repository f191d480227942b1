"""Debian's Chromium as the browser tests and the README screenshot launch it (no download)."""

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Headless as root, and no background networking: this machine's closed network refuses it.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
