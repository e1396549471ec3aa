#!/usr/bin/env bash
# Debian packages the sandbox and the browser tests need. Installs only what is missing,
# and only where it can (as root with apt); elsewhere it says what the tests will lack.
set -euo pipefail
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
# The process sandbox's holder (Debian's essential perl-base and util-linux have them).
[ -x /usr/bin/perl ] || missing+=(perl-base)
[ -x /usr/bin/unshare ] || missing+=(util-linux)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "Missing Debian packages (install them as root): ${missing[*]}" >&2
fi
