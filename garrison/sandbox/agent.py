"""The in-sandbox agent: the sandbox's first process, speaking JSON lines over stdio.

Standard library only (it runs on whatever Python the sandbox template has). The host
binds it read-only into the sandbox with its two extension modules, ``agent_relay``
(HTTP relay, background processes) and ``agent_archive`` (archive upload and download),
which it loads at first use (``extension``), so a cold start never pays for them.

Everything here runs INSIDE the sandbox, so nothing it says is trusted by the host:
code run by ``run_code`` shares this process and could forge replies. That only
fools the caller about its own code; limits, kill reasons and file access on the
host side never depend on what the agent says.

Protocol: one JSON object per line. Requests ``{"id": n, "op": "...", ...}``; replies
``{"id": n, "type": "stdout"|"stderr", "data": "..."}`` while streaming, then exactly
one ``{"id": n, "type": "result", "value": {...}}`` or
``{"id": n, "type": "error", "kind": "...", "message": "..."}``.
The relay ops (``http``, ``egress_*``, ``spawn``) carry HTTP over the same lines; see Relay.
"""

# Start-up time is every cold sandbox's latency and CPU: under gVisor the `ast` module
# (enum, contextlib, collections...) costs ~40 ms and `base64` (re, struct) ~15 ms to
# import, `json` (re, and regexes compiled at import) and `signal` (enum) more, so the
# agent uses their C cores, `_ast`, `binascii`, `_json` and `_signal`, which load at no
# cost. No `from __future__` either: it is one more module to find and read.
import _ast
import _signal
import binascii
import io
import os
import stat
import sys
import threading
import time

_AST_ONLY = 0x400  # ast.PyCF_ONLY_AST


def _b64e(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def _b64d(text: str) -> bytes:
    return binascii.a2b_base64(text)


try:
    import _json

    class _ScanContext:
        """What the C scanner reads from json.JSONDecoder: plain JSON, no hooks."""
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__

    _scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]

    def dumps(obj) -> str:
        """json.dumps(obj, separators=(",", ":"), default=str, ensure_ascii=False)."""
        return "".join(_json.make_encoder({}, str, _json.encode_basestring, None, ":", ",",
                                          False, False, True)(obj, 0))

    def loads(text: str):
        text = text.strip(" \t\n\r")
        try:
            obj, end = _scan(text, 0)
        except StopIteration as exc:
            raise ValueError(f"Expecting value: char {exc.value}") from None
        if end != len(text):
            raise ValueError(f"Extra data: char {end}")
        return obj

    dumps({"probe": [1.5, None, True, "\u00e9"]})  # an interpreter whose _json differs falls back
except (ImportError, AttributeError, TypeError):
    import json

    def dumps(obj) -> str:
        return json.dumps(obj, separators=(",", ":"), default=str, ensure_ascii=False)

    def loads(text: str):
        return json.loads(text)


WORKSPACE = os.environ.get("GARRISON_WORKSPACE", "/workspace")
TEMPLATE_PACKAGES = "/opt/garrison/site-packages"
OUTPUT_CAP = int(os.environ.get("GARRISON_OUTPUT_CAP", str(1024 * 1024)))
CHUNK = 512 * 1024
MAX_ARCHIVE_MEMBERS = 10000
INLINE_OPS = ("ping", "init", "read", "write", "stat", "mkdir", "create_context", "delete_context",
              "egress_reply", "http_cancel", "proc_status")


class AgentError(Exception):
    kind = "AgentError"


class PathEscape(AgentError):
    kind = "PathEscape"


class FileTooLarge(AgentError):
    kind = "FileTooLarge"


class NotFoundError(AgentError):
    kind = "NotFound"


class BadArgument(AgentError):
    kind = "BadRequest"


class ConnectionRefused(AgentError):
    kind = "ConnectionRefused"


_extension_lock = threading.Lock()


def extension(name: str):
    """``agent_relay`` or ``agent_archive``, loaded at first use. In the sandbox they sit
    beside this file, as bytecode when the agent runs from bytecode (agent_code)."""
    with _extension_lock:
        mod = sys.modules.get(name)
        if mod is not None:
            return mod
        if __name__ != "__main__":  # imported on the host (garrison's checks, tests)
            import importlib
            return importlib.import_module(f"garrison.sandbox.{name}")
        path = os.path.join(os.path.dirname(__file__), name + os.path.splitext(__file__)[1])
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".pyc"):
            import marshal
            code = marshal.loads(data[16:])  # after the 16-byte header (magic, flags, source stamp)
        else:
            code = compile(data, path, "exec")
        mod = type(sys)(name)
        mod.__file__ = path
        exec(code, mod.__dict__)
        sys.modules[name] = mod
        return mod


# ---------------------------------------------------------------- output channel


class Channel:
    """Writes replies on a private dup of the original stdout; fd 1 is then /dev/null."""

    def __init__(self, fd: int) -> None:
        self._out = os.fdopen(fd, "wb", buffering=0)
        self._lock = threading.Lock()

    def send(self, *msgs: dict) -> None:
        """Several messages go out in one write (one wake-up of the host's reader)."""
        line = b"".join(dumps(msg).encode("utf-8", "replace") + b"\n" for msg in msgs)
        view = memoryview(line)
        with self._lock:
            # A raw write may be partial (gVisor writes host pipes up to the pipe buffer):
            # loop, or the rest of the line is lost and the host waits forever.
            while view:
                written = self._out.write(view)
                view = view[written or 0:]


class CappedBuffer:
    """Collects one stream up to the cap; flags truncation; optionally streams chunks."""

    def __init__(self, cap: int, on_chunk=None) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False
        self.on_chunk = on_chunk

    def add(self, text: str) -> None:
        if not text:
            return
        room = self.cap - self.size
        if room <= 0:
            self.truncated = True
            return
        if len(text.encode("utf-8", "replace")) > room:
            text = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
            self.truncated = True
        self.size += len(text.encode("utf-8", "replace"))
        self.parts.append(text)
        if self.on_chunk is not None:
            self.on_chunk(text)

    def text(self) -> str:
        return "".join(self.parts)


class StreamProxy(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr while user code runs."""

    def __init__(self, buf: CappedBuffer) -> None:
        self.buf = buf

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:  # type: ignore[override]
        if not isinstance(s, str):
            raise TypeError("write() argument must be str")
        self.buf.add(s)
        return len(s)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False


# ---------------------------------------------------------------- python contexts


class Context:
    def __init__(self) -> None:
        self.globals: dict = {"__name__": "__main__", "__builtins__": __builtins__}


def _rich_results(value) -> list[dict]:
    """PNG figures from matplotlib (when installed and used) and _repr_*_ of the value."""
    results: list[dict] = []
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        try:
            for num in plt.get_fignums():
                fig = plt.figure(num)
                out = io.BytesIO()
                fig.savefig(out, format="png")
                results.append({"png": _b64e(out.getvalue())})
            plt.close("all")
        except Exception as exc:  # a broken figure must not break the reply
            results.append({"text": f"could not render figure: {exc}"})
    if value is not None:
        for mime, meth in (("png", "_repr_png_"), ("html", "_repr_html_"), ("svg", "_repr_svg_")):
            fn = getattr(value, meth, None)
            if callable(fn):
                try:
                    data = fn()
                except Exception:
                    continue
                if isinstance(data, bytes):
                    data = _b64e(data)
                if isinstance(data, str):
                    results.append({mime: data})
    return results


def run_code(ctx: Context, code: str, stream) -> dict:
    out = CappedBuffer(OUTPUT_CAP, (lambda t: stream("stdout", t)) if stream else None)
    err = CappedBuffer(OUTPUT_CAP, (lambda t: stream("stderr", t)) if stream else None)
    value = None
    error = None
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = StreamProxy(out), StreamProxy(err)
    try:
        tree = compile(code, "<cell>", "exec", _AST_ONLY)
        last = None
        if tree.body and isinstance(tree.body[-1], _ast.Expr):
            last = _ast.Expression(tree.body[-1].value)
            tree.body.pop()
        exec(compile(tree, "<cell>", "exec"), ctx.globals)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), ctx.globals)
    except BaseException as exc:  # KeyboardInterrupt from an interrupt included
        import traceback
        if isinstance(exc, SystemExit):
            error = {"name": "SystemExit", "value": str(exc.code), "traceback": ""}
        else:
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            # Drop the agent's own frame so the traceback starts at the cell (by the name its
            # code was compiled under, which need not be where the file sits).
            tb = [line for line in tb if run_code.__code__.co_filename not in line]
            error = {"name": type(exc).__name__, "value": str(exc), "traceback": "".join(tb)}
    finally:
        sys.stdout, sys.stderr = old
    if value is not None:
        ctx.globals["_"] = value
    text = None
    if value is not None:
        try:
            text = repr(value)
        except Exception as exc:
            text = f"<repr failed: {exc}>"
        if len(text) > OUTPUT_CAP:
            text = text[:OUTPUT_CAP]
    return {
        "stdout": out.text(),
        "stderr": err.text(),
        "stdout_truncated": out.truncated,
        "stderr_truncated": err.truncated,
        "text": text,
        "results": _rich_results(value),
        "error": error,
    }


# ---------------------------------------------------------------- commands


def run_command(req: dict, stream) -> dict:
    import subprocess
    cmd = req.get("cmd")
    if isinstance(cmd, str):
        argv = ["/bin/sh", "-c", cmd]
    elif isinstance(cmd, list) and cmd and all(isinstance(a, str) for a in cmd):
        argv = cmd
    else:
        raise BadArgument("cmd must be a string or a non-empty list of strings")
    timeout = float(req.get("timeout") or 60)
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (req.get("env") or {}).items()})
    cwd = resolve_dir(req.get("cwd") or WORKSPACE)
    stdin_data = req.get("stdin")
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return {"exit_code": 127, "stdout": "", "stderr": str(exc), "stdout_truncated": False,
                "stderr_truncated": False, "timed_out": False}
    bufs = {
        "stdout": CappedBuffer(OUTPUT_CAP, (lambda t: stream("stdout", t)) if stream else None),
        "stderr": CappedBuffer(OUTPUT_CAP, (lambda t: stream("stderr", t)) if stream else None),
    }

    def pump(name: str, pipe) -> None:
        while True:
            data = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536)
            if not data:
                break
            bufs[name].add(data.decode("utf-8", "replace"))
        pipe.close()

    pumps = [threading.Thread(target=pump, args=(n, getattr(proc, n)), daemon=True) for n in bufs]
    for t in pumps:
        t.start()
    if stdin_data is not None:
        try:
            proc.stdin.write(stdin_data.encode())  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, _signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
    for t in pumps:
        t.join(2)
    return {
        "exit_code": proc.returncode,
        "stdout": bufs["stdout"].text(),
        "stderr": bufs["stderr"].text(),
        "stdout_truncated": bufs["stdout"].truncated,
        "stderr_truncated": bufs["stderr"].truncated,
        "timed_out": timed_out,
    }


# ---------------------------------------------------------------- files


def split_path(path: str) -> list[str]:
    """Components of a path inside the workspace; refuses anything that leaves it."""
    if not isinstance(path, str) or "\x00" in path:
        raise BadArgument("path must be a string without NUL bytes")
    if path.startswith("/"):
        root = WORKSPACE.rstrip("/") + "/"
        if path.rstrip("/") == WORKSPACE.rstrip("/"):
            return []
        if not path.startswith(root):
            raise PathEscape(f"path {path!r} is outside {WORKSPACE}")
        path = path[len(root):]
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PathEscape(f"path {path!r} contains '..'")
    return parts


def _open_dir_chain(parts: list[str], create: bool = False) -> int:
    """Opens the directory ``parts`` under the workspace, one component at a time with
    O_NOFOLLOW, so a symlink planted anywhere on the way is refused, never followed."""
    fd = os.open(WORKSPACE, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            try:
                nfd = _open_nofollow(fd, part, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                if not create:
                    raise NotFoundError("no such directory: {}".format("/".join(parts))) from None
                os.mkdir(part, 0o755, dir_fd=fd)
                nfd = _open_nofollow(fd, part, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                if _is_link(fd, part):
                    raise PathEscape(f"symlink in path: {part}") from None
                if exc.errno == 20:  # ENOTDIR
                    raise BadArgument(f"not a directory: {part}") from None
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_nofollow(dir_fd: int, name: str, flags: int) -> int:
    """Opens ``name`` in ``dir_fd`` only if it is not a symlink. O_NOFOLLOW alone is not
    trusted (kernels and gVisor differ on O_DIRECTORY|O_NOFOLLOW): the opened object must
    also be the very inode that lstat saw, which closes the swap-in-between race."""
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
        before = None
    if before is not None and stat.S_ISLNK(before.st_mode):
        raise PathEscape(f"symlink in path: {name}")
    fd = os.open(name, flags | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
    after = os.fstat(fd)
    now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if (after.st_dev, after.st_ino) != (now.st_dev, now.st_ino) or (
            before is not None and (before.st_dev, before.st_ino) != (after.st_dev, after.st_ino)):
        os.close(fd)
        raise PathEscape(f"path changed while it was opened: {name}")
    return fd


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def resolve_dir(path: str) -> str:
    parts = split_path(path)
    fd = _open_dir_chain(parts)
    os.close(fd)
    return os.path.join(WORKSPACE, *parts)


def _open_file(path: str, flags: int, create_dirs: bool = False) -> int:
    parts = split_path(path)
    if not parts:
        raise BadArgument("path names the workspace itself, not a file")
    dfd = _open_dir_chain(parts[:-1], create=create_dirs)
    try:
        try:
            return _open_nofollow(dfd, parts[-1], flags)
        except FileNotFoundError:
            raise NotFoundError(f"no such file: {path}") from None
        except OSError as exc:
            if _is_link(dfd, parts[-1]):
                raise PathEscape(f"path is a symlink: {path}") from None
            if exc.errno == 21:
                raise BadArgument(f"is a directory: {path}") from None
            raise
    finally:
        os.close(dfd)


def op_read(req: dict) -> dict:
    offset = int(req.get("offset") or 0)
    length = min(int(req.get("length") or CHUNK), CHUNK)
    fd = _open_file(req["path"], os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadArgument("not a regular file: {}".format(req["path"]))
        max_bytes = req.get("max_bytes")
        if max_bytes is not None and st.st_size > int(max_bytes):
            raise FileTooLarge("{} is {} bytes, over the {} byte limit".format(req["path"], st.st_size, max_bytes))
        data = os.pread(fd, length, offset)
        return {"data": _b64e(data), "size": st.st_size, "eof": offset + len(data) >= st.st_size}
    finally:
        os.close(fd)


def op_write(req: dict) -> dict:
    data = _b64d(req.get("data") or "")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if req.get("append") else os.O_TRUNC)
    fd = _open_file(req["path"], flags, create_dirs=True)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadArgument("not a regular file: {}".format(req["path"]))
        os.write(fd, data)
        return {"size": os.fstat(fd).st_size}
    finally:
        os.close(fd)


def _entry(name: str, rel: str, st: os.stat_result) -> dict:
    mode = st.st_mode
    kind = "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "symlink" if stat.S_ISLNK(mode) else "other"
    return {"name": name, "path": rel, "type": kind, "size": st.st_size, "mode": stat.S_IMODE(mode), "mtime": st.st_mtime}


def op_list(req: dict) -> dict:
    parts = split_path(req.get("path") or "")
    depth = max(1, min(int(req.get("depth") or 1), 10))
    entries: list[dict] = []

    def walk(rel_parts: list[str], level: int) -> None:
        fd = _open_dir_chain(rel_parts)
        try:
            for name in sorted(os.listdir(fd)):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                rel = "/".join(rel_parts + [name])
                entries.append(_entry(name, rel, st))
                if len(entries) > 10000:
                    raise BadArgument("more than 10000 entries; list a narrower path")
                if stat.S_ISDIR(st.st_mode) and level < depth:
                    walk(rel_parts + [name], level + 1)
        finally:
            os.close(fd)

    walk(parts, 1)
    return {"entries": entries}


def op_stat(req: dict) -> dict:
    parts = split_path(req["path"])
    if not parts:
        return _entry("", "", os.stat(WORKSPACE))
    dfd = _open_dir_chain(parts[:-1])
    try:
        try:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise NotFoundError("no such file: {}".format(req["path"])) from None
        return _entry(parts[-1], "/".join(parts), st)
    finally:
        os.close(dfd)


def op_mkdir(req: dict) -> dict:
    os.close(_open_dir_chain(split_path(req["path"]), create=True))
    return {}


def _remove_tree(dfd: int, name: str) -> None:
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        sub = _open_nofollow(dfd, name, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for child in os.listdir(sub):
                _remove_tree(sub, child)
        finally:
            os.close(sub)
        os.rmdir(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


def op_remove(req: dict) -> dict:
    parts = split_path(req["path"])
    if not parts:
        raise BadArgument("refusing to remove the workspace itself")
    dfd = _open_dir_chain(parts[:-1])
    try:
        try:
            _remove_tree(dfd, parts[-1])
        except FileNotFoundError:
            raise NotFoundError("no such file: {}".format(req["path"])) from None
    finally:
        os.close(dfd)
    return {}


# ---------------------------------------------------------------- dispatch


class Agent:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.contexts = {"default": Context()}
        self.code_queue: list[dict] = []
        self.code_cv = threading.Condition()
        self.main_busy: int | None = None
        # The cell an interrupt was sent for: SIGINT is handled at the main thread's next
        # bytecode boundary, maybe after that cell ended, so the handler checks it still runs.
        self.interrupt_target: int | None = None
        self._relay = None

    @property
    def relay(self):
        if self._relay is None:
            relay = extension("agent_relay").Relay(self)
            with _extension_lock:
                if self._relay is None:
                    self._relay = relay
        return self._relay

    def reply(self, rid, value: dict) -> None:
        self.channel.send({"id": rid, "type": "result", "value": value})

    def fail(self, rid, exc: BaseException) -> None:
        if isinstance(exc, AgentError):
            kind = exc.kind
        elif isinstance(exc, (KeyError, ValueError, TypeError)):
            kind = "BadRequest"
        elif isinstance(exc, OSError) and exc.errno == 28:
            kind = "DiskFull"
        elif (isinstance(exc, OSError) and exc.errno == 11) or (
                isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)):
            kind = "PidsExhausted"
        else:
            kind = "AgentError"
        self.channel.send({"id": rid, "type": "error", "kind": kind, "message": f"{type(exc).__name__}: {exc}"})

    def streamer(self, rid, req: dict):
        if not req.get("stream"):
            return None
        return lambda name, text: self.channel.send({"id": rid, "type": name, "data": text})

    def handle(self, req: dict) -> None:
        rid = req.get("id")
        try:
            op = req.get("op")
            if op == "ping":
                value = {"pid": os.getpid(), "uid": os.getuid(), "time": time.time()}
            elif op == "init":
                envs = req.get("envs") or {}
                os.environ.update({str(k): str(v) for k, v in envs.items()})
                value = {}
            elif op == "command":
                value = run_command(req, self.streamer(rid, req))
            elif op == "read":
                value = op_read(req)
            elif op == "write":
                value = op_write(req)
            elif op == "list":
                value = op_list(req)
            elif op == "stat":
                value = op_stat(req)
            elif op == "mkdir":
                value = op_mkdir(req)
            elif op == "remove":
                value = op_remove(req)
            elif op == "upload_archive":
                value = extension("agent_archive").op_upload_archive(req)
            elif op == "download_archive":
                value = extension("agent_archive").op_download_archive(req)
            elif op == "egress_reply":
                value = self.relay.answer(req)
            elif op == "http_cancel":
                value = self.relay.cancel(req)
            elif op == "egress_listen":
                value = self.relay.listen(req)
            elif op == "spawn":
                value = self.relay.spawn(req)
            elif op == "proc_status":
                value = self.relay.status(req)
            elif op == "create_context":
                name = f"ctx{len(self.contexts) + 1}"
                self.contexts[name] = Context()
                value = {"context": name}  # type: ignore[dict-item]
            elif op == "delete_context":
                if req.get("context") in (None, "default"):
                    raise BadArgument("the default context cannot be deleted")
                self.contexts.pop(req["context"], None)
                value = {}
            else:
                raise BadArgument(f"unknown op {op!r}")
            self.reply(rid, value)
        except BaseException as exc:
            self.fail(rid, exc)

    def read_loop(self, stdin) -> None:
        for raw in stdin:
            try:
                req = loads(raw)
                if not isinstance(req, dict):
                    raise ValueError("request must be an object")
            except ValueError as exc:
                self.channel.send({"id": None, "type": "error", "kind": "BadRequest", "message": str(exc)})
                continue
            op = req.get("op")
            if op == "run_code":
                with self.code_cv:
                    self.code_queue.append(req)
                    self.code_cv.notify()
            elif op == "interrupt":
                if self.main_busy is not None and self.main_busy == req.get("target"):
                    self.interrupt_target = self.main_busy
                    _signal.pthread_kill(threading.main_thread().ident or 0, _signal.SIGINT)
                self.reply(req.get("id"), {"interrupted": self.main_busy == req.get("target")})
            elif op == "http":
                if self.relay.serve_here(self.read_loop, stdin, req):
                    return  # another thread reads the channel now
            elif op == "egress_next":
                self.relay.next_request(req.get("id"))
            elif op in INLINE_OPS:
                self.handle(req)  # quick and ordered: no thread start (it costs ms under gVisor)
            else:
                try:
                    threading.Thread(target=self.handle, args=(req,), daemon=True).start()
                except RuntimeError as exc:  # no pid left for a thread: answer, stay alive
                    self.fail(req.get("id"), exc)
        # The host closed our stdin: garrison went away, so the sandbox ends.
        with self.code_cv:
            self.code_queue.append({"op": "exit"})
            self.code_cv.notify()

    def main_loop(self) -> None:
        """run_code runs on the main thread so an interrupt can raise KeyboardInterrupt in it."""
        while True:
            try:
                with self.code_cv:
                    while not self.code_queue:
                        self.code_cv.wait()
                    req = self.code_queue.pop(0)
            except KeyboardInterrupt:  # a late interrupt for a cell that already ended
                continue
            if req.get("op") == "exit":
                return
            rid = req.get("id")
            try:
                ctx = self.contexts.get(req.get("context") or "default")
                if ctx is None:
                    raise NotFoundError("no such context: {}".format(req.get("context")))
                self.main_busy = rid
                try:
                    value = run_code(ctx, req.get("code") or "", self.streamer(rid, req))
                finally:
                    self.main_busy = None
                    self.interrupt_target = None
                self.reply(rid, value)
            except BaseException as exc:
                self.fail(rid, exc)


def main() -> None:
    # Keep the protocol on private descriptors; user code writing to fd 1/2 lands in
    # /dev/null instead of corrupting the stream.
    out_fd = os.dup(1)
    in_fd = os.dup(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.set_inheritable(out_fd, False)
    os.set_inheritable(in_fd, False)
    os.makedirs(WORKSPACE, exist_ok=True)
    os.chdir(WORKSPACE)
    sys.path.insert(0, WORKSPACE)
    # The agent starts with -I -S: no PYTHONPATH, no site module (scanning site-packages and
    # their .pth files costs ~140 ms under gVisor). Add the package directories ourselves.
    version = "python{}.{}".format(*sys.version_info[:2])
    for path in (f"/usr/local/lib/{version}/dist-packages", "/usr/lib/python3/dist-packages",
                 f"/usr/lib/{version}/dist-packages", f"/usr/local/lib/{version}/site-packages",
                 f"/usr/lib/{version}/site-packages", TEMPLATE_PACKAGES):
        if os.path.isdir(path):
            sys.path.append(path)
    sys.argv = [""]
    channel = Channel(out_fd)
    agent = Agent(channel)
    channel.send({"id": None, "type": "ready", "value": {"pid": os.getpid(), "uid": os.getuid(),
                                                          "python": sys.version.split()[0]}})
    stdin = os.fdopen(in_fd, "r", encoding="utf-8", errors="replace")
    threading.Thread(target=agent.read_loop, args=(stdin,), daemon=True).start()

    def on_sigint(signum, frame) -> None:
        # Only the cell that was interrupted sees KeyboardInterrupt; a late signal is ignored
        # so it cannot drop the next request while the main loop takes it from the queue.
        if agent.interrupt_target is not None and agent.interrupt_target == agent.main_busy:
            agent.interrupt_target = None
            raise KeyboardInterrupt

    _signal.signal(_signal.SIGINT, on_sigint)
    agent.main_loop()
    os._exit(0)


if __name__ == "__main__":
    # The extension modules find this module under this name (it runs as __main__).
    sys.modules["garrison_agent"] = sys.modules[__name__]
    main()
