#!/bin/sh
# Runs inside a bare Debian 12 root (mmdebstrap minbase) after `apt-get install ./nbackup-*.deb`:
# the commands answer, the built-in PKI issues certificates as the operator would, and an agent
# backs up a folder to a server over loopback; the archive restores exactly with plain tar.
# $PORT: a free loopback port chosen by the test.
set -eu
: "${PORT:?}"

nbackup-agent --help | grep -q 'Exit status:'
nbackup-server --help | grep -q 'Exit status:'
nbackup-agent --version
id nbackup
stat -c '%U %a %n' /var/lib/nbackup /var/log/nbackup /etc/nbackup/pki

AS_SERVER="setpriv --reuid=nbackup --regid=nbackup --init-groups --"
as_server() { $AS_SERVER "$@"; }
as_server nbackup-server pki init-ca --dir /etc/nbackup/pki
as_server nbackup-server pki issue-server --dir /etc/nbackup/pki --san 127.0.0.1
as_server nbackup-server pki issue-agent bare-agent --dir /etc/nbackup/pki

cat > /etc/nbackup/server.yaml <<EOF
server:
  listen: 127.0.0.1:$PORT
tls:
  ca_cert: /etc/nbackup/pki/ca.crt
  server_cert: /etc/nbackup/pki/server.crt
  server_key: /etc/nbackup/pki/server.key
storages:
  main:
    base_dir: /var/lib/nbackup/main
    min_free: 1mb
EOF
cat > /etc/nbackup/agent.yaml <<EOF
agent:
  name: bare-agent
server:
  address: 127.0.0.1:$PORT
tls:
  ca_cert: /etc/nbackup/pki/ca.crt
  client_cert: /etc/nbackup/pki/bare-agent.crt
  client_key: /etc/nbackup/pki/bare-agent.key
backups:
  - name: doc
    storage: main
    schedule: "0 2 * * *"
    sources:
      - path: /usr/share/doc
EOF

# exec: $! must be the server itself (setpriv execs /usr/bin/nbackup-server, which execs node), not
# a subshell running the as_server function, or `kill $server` below leaves the server running
# after mmdebstrap has thrown the root away.
(exec $AS_SERVER nbackup-server --config /etc/nbackup/server.yaml) > /tmp/server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
# Bounded wait for the server's "listening" line (10 s).
i=0
until grep -qs '"listening"' /tmp/server.log; do
  i=$((i + 1))
  if [ $i -gt 100 ] || ! kill -0 $server 2>/dev/null; then cat /tmp/server.log; exit 1; fi
  sleep 0.1
done

nbackup-agent --config /etc/nbackup/agent.yaml --once
kill $server
wait $server || true
trap - EXIT
# The server has exited (its graceful SIGTERM path), so nothing outlives this root.
if kill -0 $server 2>/dev/null; then echo "bare Debian 12: the server is still running after SIGTERM" >&2; exit 1; fi
grep -q '"shutting down"' /tmp/server.log || { echo "bare Debian 12: the server did not log its shutdown" >&2; cat /tmp/server.log >&2; exit 1; }

archive=$(ls /var/lib/nbackup/main/bare-agent/doc/*.tar.gz)
stat -c '%U %a %n' "$archive"
gzip -t "$archive"
mkdir /tmp/restored
tar -xzf "$archive" -C /tmp/restored
diff -r --no-dereference /usr/share/doc /tmp/restored/usr/share/doc
echo "bare Debian 12: backup restored exactly"
