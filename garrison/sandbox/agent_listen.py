"""TCP transport for the in-sandbox agent (the Kubernetes backend's pods).

    python3 -I -S -u agent_listen.py --listen [HOST:]PORT /opt/garrison/agent.py

The pod's IP is reachable from inside the cluster, so a connection is served only after
its first line is the sandbox's secret token (``GARRISON_AGENT_TOKEN`` in the environment,
set per sandbox through the SandboxClaim's env). A wrong token, a missing line or a slow
client gets the connection closed and the port keeps listening. The first connection that
authenticates becomes the agent's stdin/stdout: the listening socket is closed (one
session per sandbox) and the agent is exec'd over this process with the socket as fds 0
and 1, so it speaks exactly the same JSON-lines protocol as under gVisor and bubblewrap,
and exits when garrison closes the connection. The token is removed from the environment
before the exec, so code in the sandbox cannot read it from /proc/1/environ.

Standard library only, like agent.py.
"""

import hmac
import os
import socket
import sys

TOKEN_ENV = "GARRISON_AGENT_TOKEN"
AUTH_TIMEOUT_S = 10.0
MAX_TOKEN_LINE = 1024


def read_line(conn: socket.socket) -> bytes:
    """The first line, at most MAX_TOKEN_LINE bytes; b"" when there is none in time."""
    data = b""
    while b"\n" not in data:
        if len(data) > MAX_TOKEN_LINE:
            return b""
        chunk = conn.recv(MAX_TOKEN_LINE)
        if not chunk:
            return b""
        data += chunk
    line, _, rest = data.partition(b"\n")
    # garrison sends nothing before the agent's ready line: bytes after the token mean a
    # client that does not follow the protocol (and the agent would lose them).
    return line if not rest else b""


def accept_authenticated(server: socket.socket, token: bytes) -> socket.socket:
    while True:
        conn, _ = server.accept()
        conn.settimeout(AUTH_TIMEOUT_S)
        try:
            line = read_line(conn)
        except OSError:
            line = b""
        if line and hmac.compare_digest(line.strip(), token):
            conn.settimeout(None)
            return conn
        conn.close()


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "0.0.0.0", int(port)


def main(argv: list) -> None:
    if len(argv) != 3 or argv[0] != "--listen":
        sys.stderr.write("usage: agent_listen.py --listen [HOST:]PORT AGENT_PATH\n")
        sys.exit(2)
    token = os.environ.pop(TOKEN_ENV, "").encode()
    if len(token) < 16:
        # Never serve without a secret: anyone in the cluster could run code here.
        sys.stderr.write(f"agent_listen: {TOKEN_ENV} is missing or shorter than 16 characters\n")
        sys.exit(2)
    host, port = parse_listen(argv[1])
    server = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(8)
    conn = accept_authenticated(server, token)
    server.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    os.dup2(conn.fileno(), 0)
    os.dup2(conn.fileno(), 1)
    conn.close()
    os.execve(sys.executable, [sys.executable, "-I", "-S", "-u", argv[2]], dict(os.environ))


if __name__ == "__main__":
    main(sys.argv[1:])
