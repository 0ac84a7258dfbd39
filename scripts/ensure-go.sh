#!/bin/sh
# The testbed (experiments/testbed/, `stormsim testbed` and `stormsim calibrate`) runs a
# real Go net/http server and http.Client load generator. It needs a Go toolchain: Debian's
# golang-go (Go 1.19 on bookworm). Install it where we can (root with apt-get); anywhere else
# say so and go on: the simulator works without Go, `stormsim testbed` then names the fix, and
# the calibration test is skipped with the reason. Then build the two programs (standard
# library only: nothing is downloaded).
if ! command -v go >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "set-up: installing Debian's golang-go (the testbed's Go server and load generator)"
    apt-get install -y -qq golang-go >/dev/null 2>&1 \
      || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq golang-go >/dev/null 2>&1) \
      || true
  fi
fi
if ! command -v go >/dev/null 2>&1; then
  echo "set-up: Go is missing and could not be installed here; \`stormsim testbed\` and" \
       "\`stormsim calibrate\` will not run and tests/test_testbed.py will be skipped (the" \
       "simulator works). Install it, e.g. 'sudo apt-get install golang-go'." >&2
  exit 0
fi
PY=${PY:-.venv/bin/python}
"$PY" -m experiments.testbed.build || echo "set-up: building the testbed's Go programs failed (see above);" \
  "\`stormsim testbed\` will try again when it runs." >&2
exit 0
