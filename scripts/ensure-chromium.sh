#!/bin/sh
# Figure export to PNG/SVG/PDF (kaleido 1.x) needs a Chrome or Chromium. Install Debian's
# chromium where we can (root with apt-get); anywhere else say so and go on: HTML figures
# and everything else work without it, and `stormsim plot --format png` then names the fix.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
   || command -v google-chrome >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "set-up: installing Debian's chromium for static figure export (kaleido)"
  if (apt-get install -y -qq chromium >/dev/null 2>&1 \
      || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)); then
    exit 0
  fi
fi
echo "set-up: no Chrome/Chromium found and it could not be installed here; PNG/SVG/PDF export" \
     "will not work (HTML will). Install one, e.g. 'sudo apt-get install chromium'." >&2
exit 0
