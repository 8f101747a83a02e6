#!/usr/bin/env bash
# Install Debian packages from trixie (Debian 13) on an older Debian, for `make system-deps`:
# bookworm's docker-compose is the old 1.x (it rejects today's compose files) and it has no
# kubectl of its own era. Both are static Go programs that need only libc6 >= 2.34.
# The trixie package lists go to a private directory: the system's apt sources are not touched.
#   deploy/install-trixie-debs.sh docker-compose kubectl
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
  >"$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
apt-get "${apt_opts[@]}" update -qq
(cd "$work" && apt-get "${apt_opts[@]}" download "$@" >/dev/null)
dpkg -i "$work"/*.deb >/dev/null
