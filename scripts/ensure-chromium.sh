#!/bin/sh
# Figure export to PNG/SVG/PDF (kaleido 1.x) needs a Chrome or Chromium, and the dashboard's
# browser test drives it through chromedriver. Install Debian's chromium and chromium-driver
# where we can (root with apt-get); anywhere else say so and go on: HTML figures and
# everything else work without them, `stormsim plot --format png` then names the fix, and
# the browser test is skipped with the reason.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "set-up: installing Debian's chromium and chromium-driver (figure export, browser test)"
  if (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
      || (apt-get update -qq >/dev/null 2>&1 \
          && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)); then
    exit 0
  fi
fi
echo "set-up: chromium/chromedriver are missing and could not be installed here; PNG/SVG/PDF" \
     "export and the browser test will not run (HTML will). Install them, e.g." \
     "'sudo apt-get install chromium chromium-driver'." >&2
exit 0
