"""The in-sandbox agent's HTTP relay and background processes (ops ``http``, ``egress_*``,
``spawn``, ``proc_status``), loaded by the agent at first use (``agent.extension``), so a
cold start never pays for it. Standard library only; it runs inside the sandbox.

The sandbox has no network, only its own loopback. Ingress: the host asks for ``http``
(a request to 127.0.0.1:PORT here); the answer streams back as events on the request id:
"stdout" data "H{json head}" once, then "B<base64>" chunks, then the result. Egress: a
listener on 127.0.0.1:PORT here (``egress_listen``); each request it accepts waits for a
host poll (``egress_next``, answered when a request arrives) and the host answers it
piece by piece (``egress_reply``). Workers are reused threads: a thread start costs
milliseconds under gVisor.
"""

import os
import sys
import threading

if "garrison_agent" in sys.modules:  # in the sandbox: the agent (run as __main__) registered itself
    _core = sys.modules["garrison_agent"]
else:  # imported on the host (tests)
    from garrison.sandbox import agent as _core  # type: ignore[no-redef]

BadArgument, NotFoundError, ConnectionRefused = _core.BadArgument, _core.NotFoundError, _core.ConnectionRefused
WORKSPACE, resolve_dir, dumps, _b64e, _b64d = _core.WORKSPACE, _core.resolve_dir, _core.dumps, _core._b64e, _core._b64d

HOP_HEADERS = ("connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade",
               "proxy-connection", "te", "trailer")
MAX_EGRESS_HEAD = 64 * 1024
WHOLE_ANSWER = 64 * 1024  # an answer up to this size (with a Content-Length) goes back in one write
_connection: list = []


def _connection_class():
    """http.client.HTTPConnection that sends a request's head and body in one send (it sends
    them apart: two syscalls, and a second segment Nagle's algorithm may hold back)."""
    if not _connection:
        import http.client

        class OneSendConnection(http.client.HTTPConnection):
            def _send_output(self, message_body=None, encode_chunked=False):
                if not isinstance(message_body, bytes) or encode_chunked:
                    return super()._send_output(message_body, encode_chunked)
                self._buffer.extend((b"", b""))
                msg = b"\r\n".join(self._buffer) + message_body
                del self._buffer[:]
                self.send(msg)

        _connection.append(OneSendConnection)
    return _connection[0]


class Relay:
    def __init__(self, agent) -> None:
        import queue
        self.agent = agent
        self.lock = threading.Lock()
        self.jobs: queue.Queue = queue.Queue()
        self.idle = 0
        self.local = threading.local()
        self.inflight: dict = {}
        self.waiting: list = []
        self.pending: list = []
        self.answers: dict = {}
        self.next_eid = 0
        self.procs: dict = {}
        self.conns: dict = {}  # port -> kept-alive connections not in use, shared by the threads

    # -- reused worker threads
    def submit(self, fn, *args) -> None:
        with self.lock:
            spawn = self.idle == 0
            if not spawn:
                self.idle -= 1
        if spawn:
            threading.Thread(target=self._worker, args=((fn, args),), daemon=True).start()
        else:
            self.jobs.put((fn, args))

    def _worker(self, job) -> None:
        while True:
            fn, args = job
            try:
                fn(*args)
            except BaseException:
                pass
            with self.lock:
                self.idle += 1
            job = self.jobs.get()

    # -- ingress
    #
    # Under gVisor's ptrace platform every syscall and every thread wake-up in here is a trip
    # through the sentry, so the request path keeps both few: the thread that read the request
    # serves it (serve_here), the request goes out in one send on a kept-alive connection, and
    # a complete small answer comes back as one write (head, body and result together).

    def serve_here(self, read_loop, stdin, req: dict) -> bool:
        """Hands reading the channel to another thread and serves ``req`` on this one, so the
        request never waits for a thread to wake up. False: no thread to hand over to (the
        request was answered with the error); the caller keeps reading."""
        try:
            self.submit(read_loop, stdin)
        except RuntimeError as exc:  # no pid left for a thread
            self.agent.fail(req.get("id"), exc)
            return False
        self.http(req.get("id"), req)
        return True

    def _take(self, port: int, timeout: float, fresh: bool):
        conn = None
        if not fresh:
            with self.lock:
                idle = self.conns.get(port)
                conn = idle.pop() if idle else None  # the most recently used: the least likely stale
        if conn is None:
            return _connection_class()("127.0.0.1", port, timeout=timeout)
        if conn.timeout != timeout:  # settimeout is a syscall: only when it changes
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        return conn

    def http(self, rid, req: dict) -> None:
        import http.client
        conn = None
        try:
            port = int(req["port"])
            method, path = str(req.get("method") or "GET"), str(req.get("path") or "/")
            if not path.startswith("/") or any(c in path for c in "\r\n "):
                raise BadArgument("path must start with '/' and hold no spaces or line breaks")
            headers = {str(k): str(v) for k, v in req.get("headers") or []}
            body = _b64d(req.get("body") or "")
            timeout = float(req.get("timeout") or 300)
            for attempt in (0, 1):
                conn = self._take(port, timeout, fresh=attempt == 1)
                reused = conn.sock is not None
                try:
                    conn.request(method, path, body=body if body or method not in ("GET", "HEAD") else None,
                                 headers=headers)
                    self.inflight[rid] = conn
                    resp = conn.getresponse()
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    conn.close()
                    if attempt or not reused:  # only a stale kept-alive connection earns a retry
                        raise
                except ConnectionRefusedError:
                    conn.close()
                    raise ConnectionRefused(f"nothing listens on 127.0.0.1:{port} in the sandbox") from None
            head = "H" + dumps({"status": resp.status, "reason": resp.reason, "headers": resp.getheaders()})
            send = self.agent.channel.send
            # The connection goes back to the pool before the answer's end is sent: the caller's
            # next request may arrive on another thread at once and should find it there.
            if resp.length is not None and resp.length <= WHOLE_ANSWER:
                data = resp.read()
                self._release(rid, port, conn, resp)
                conn = None  # pooled or closed: no longer this request's to close
                done = {"id": rid, "type": "result", "value": {"status": resp.status}}
                if data:
                    send({"id": rid, "type": "stdout", "data": head},
                         {"id": rid, "type": "stdout", "data": "B" + _b64e(data)}, done)
                else:
                    send({"id": rid, "type": "stdout", "data": head}, done)
            else:
                send({"id": rid, "type": "stdout", "data": head})
                while True:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    send({"id": rid, "type": "stdout", "data": "B" + _b64e(chunk)})
                self._release(rid, port, conn, resp)
                conn = None  # pooled or closed: no longer this request's to close
                self.agent.reply(rid, {"status": resp.status})
        except BaseException as exc:
            if conn is not None:
                conn.close()
            self.agent.fail(rid, exc)
        finally:
            self.inflight.pop(rid, None)

    def _release(self, rid, port: int, conn, resp) -> None:
        """Pools ``conn`` for the next request unless it was cancelled or will close."""
        resp.close()  # read1 never closes a response whose Content-Length ran out: the connection stays busy
        kept = self.inflight.pop(rid, None)
        if kept is conn and not resp.will_close:
            with self.lock:
                self.conns.setdefault(port, []).append(kept)
        else:
            conn.close()

    def cancel(self, req: dict) -> dict:
        conn = self.inflight.pop(req.get("target"), None)
        if conn is not None and conn.sock is not None:
            import socket
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return {"cancelled": conn is not None}

    # -- egress
    def listen(self, req: dict) -> dict:
        import socket
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", int(req.get("port") or 0)))
        srv.listen(128)
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()
        return {"port": srv.getsockname()[1]}

    def _accept(self, srv) -> None:
        while True:
            sock, _ = srv.accept()
            self.submit(self._egress, sock)

    @staticmethod
    def _read_request(f) -> dict:
        line = f.readline(8192).decode("latin-1").rstrip("\r\n")
        parts = line.split(" ")
        if len(parts) != 3:
            raise BadArgument("malformed request line")
        headers, size = [], len(line)
        while True:
            raw = f.readline(8192)
            size += len(raw)
            if size > MAX_EGRESS_HEAD:
                raise BadArgument("request head too large")
            text = raw.decode("latin-1").rstrip("\r\n")
            if not text:
                break
            name, _, value = text.partition(":")
            headers.append([name.strip(), value.strip()])
        lower = {k.lower(): v for k, v in headers}
        if "chunked" in lower.get("transfer-encoding", "").lower():
            body = b""
            while True:
                n = int(f.readline(1024).split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while f.readline(8192).strip():
                        pass
                    break
                body += f.read(n)
                f.readline(8)
        else:
            body = f.read(int(lower.get("content-length") or 0))
        headers = [h for h in headers if h[0].lower() not in HOP_HEADERS]
        return {"method": parts[0], "path": parts[1], "headers": headers, "body": _b64e(body)}

    def _egress(self, sock) -> None:
        import queue
        f = sock.makefile("rb")
        eid = None
        try:
            try:
                item = self._read_request(f)
            except (BadArgument, ValueError):
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            answers: queue.Queue = queue.Queue()
            with self.lock:
                self.next_eid += 1
                item["eid"] = eid = self.next_eid
                self.answers[eid] = answers
                rid = self.waiting.pop(0) if self.waiting else None
                if rid is None:
                    self.pending.append(item)
            if rid is not None:
                self.agent.reply(rid, item)
            while True:
                part = answers.get(timeout=900)
                if part["part"] == "head":
                    lines = ["HTTP/1.1 {} {}".format(int(part["status"]), part.get("reason") or "-")]
                    lines += [f"{k}: {v}" for k, v in part.get("headers") or [] if k.lower() not in HOP_HEADERS]
                    sock.sendall(("\r\n".join(lines + ["Connection: close", "", ""])).encode("latin-1"))
                elif part["part"] == "body":
                    sock.sendall(_b64d(part.get("data") or ""))
                else:
                    return
        except Exception:
            return
        finally:
            with self.lock:
                self.answers.pop(eid, None)
            f.close()
            sock.close()

    def next_request(self, rid) -> bool:
        """Answers the poll now when a request waits; else later, from the connection's thread."""
        with self.lock:
            item = self.pending.pop(0) if self.pending else None
            if item is None:
                self.waiting.append(rid)
        if item is not None:
            self.agent.reply(rid, item)
        return item is not None

    def answer(self, req: dict) -> dict:
        with self.lock:
            answers = self.answers.get(req.get("eid"))
        if answers is not None:
            answers.put(req)
        return {"open": answers is not None}

    # -- background processes (the session's agent server)
    def spawn(self, req: dict) -> dict:
        import subprocess
        cmd = req.get("cmd")
        if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
            raise BadArgument("cmd must be a non-empty list of strings")
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in (req.get("env") or {}).items()})
        log_path = f"/tmp/garrison-proc-{len(self.procs) + 1}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=resolve_dir(req.get("cwd") or WORKSPACE), env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[proc.pid] = (proc, log_path)
        return {"pid": proc.pid}

    def status(self, req: dict) -> dict:
        entry = self.procs.get(req.get("pid"))
        if entry is None:
            raise NotFoundError("no such background process: {}".format(req.get("pid")))
        proc, log_path = entry
        code = proc.poll()
        with open(log_path, "rb") as log:
            log.seek(max(0, os.path.getsize(log_path) - 4096))
            tail = log.read().decode("utf-8", "replace")
        return {"running": code is None, "exit_code": code, "log_tail": tail}
