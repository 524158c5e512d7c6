#!/usr/bin/env bash
# Installs the system packages garrison's tests use (gVisor's runsc, bubblewrap) when
# running as root; otherwise says what was skipped and why. Called by `make test`.
set -u
# libseccomp2: the seccomp filter of bubblewrap sandboxes (loaded by pyseccomp).
PKGS=(runsc bubblewrap libseccomp2)
# pgvector: the memory store's semantic-search index on PostgreSQL, for each local server
# version that apt has a package for (Debian bookworm has none; trixie and apt.postgresql.org
# do). Without it the store ranks in numpy and says so in `garrison state stats`.
for d in /usr/lib/postgresql/*/; do
  [ -d "$d" ] || continue
  p="postgresql-$(basename "$d")-pgvector"
  if apt-cache show "$p" >/dev/null 2>&1; then PKGS+=("$p"); fi
done
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ]; then
  echo "garrison: not root, so not installing system packages: ${missing[*]}." >&2
  echo "garrison: sandbox tests for the missing backends will be skipped; install them with: sudo apt-get install ${missing[*]}" >&2
  exit 0
fi
echo "garrison: installing system packages: ${missing[*]}"
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || {
  echo "garrison: apt-get install ${missing[*]} failed" >&2; exit 1; }
