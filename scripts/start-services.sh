#!/usr/bin/env bash
# Makes sure the servers the scale-out tests use are up (PostgreSQL, Redis, NATS). On this kind
# of machine they run already; when one is down and we are root, start it the way the
# machine does. Tests decide whether a missing server is a failure (CI) or a skip.
set -u
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! up 5432; then
  if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null; then
    echo "garrison: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  else
    echo "garrison: PostgreSQL is not running on 127.0.0.1:5432; PostgreSQL tests will be skipped (or fail in CI)" >&2
  fi
fi
if ! up 6379; then
  if [ "$(id -u)" = 0 ] && command -v redis-server >/dev/null; then
    echo "garrison: starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true
  else
    echo "garrison: Redis is not running on 127.0.0.1:6379; Redis tests will be skipped (or fail in CI)" >&2
  fi
fi
if ! up 4222; then
  if [ "$(id -u)" = 0 ] && [ -x /usr/sbin/nats-server ]; then
    echo "garrison: starting NATS (JetStream)"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
  else
    echo "garrison: NATS is not running on 127.0.0.1:4222; JetStream tests will be skipped (or fail in CI)" >&2
  fi
fi
for i in $(seq 1 20); do up 5432 && break; sleep 0.5; done
exit 0
