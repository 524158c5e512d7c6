"""Archive upload and download for the in-sandbox agent (ops ``upload_archive``,
``download_archive``), loaded by the agent at first use (``agent.extension``), so a cold
start never pays for it. Standard library only; it runs inside the sandbox, and garrison
also runs ``plan_archive`` on the host to refuse a bad upload before it goes in.
"""

import io
import os
import stat
import sys

if "garrison_agent" in sys.modules:  # in the sandbox: the agent (run as __main__) registered itself
    _core = sys.modules["garrison_agent"]
else:  # imported on the host (garrison's upload checks, tests)
    from garrison.sandbox import agent as _core  # type: ignore[no-redef]

BadArgument, FileTooLarge, PathEscape = _core.BadArgument, _core.FileTooLarge, _core.PathEscape
WORKSPACE, MAX_ARCHIVE_MEMBERS = _core.WORKSPACE, _core.MAX_ARCHIVE_MEMBERS
split_path, _open_file, _open_dir_chain, _open_nofollow = (
    _core.split_path, _core._open_file, _core._open_dir_chain, _core._open_nofollow)


def check_member_name(name: str) -> list[str]:
    """The components of an archive member name; refuses absolute paths and '..'."""
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise PathEscape(f"archive member {name!r} has an absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PathEscape(f"archive member {name!r} contains '..'")
    return parts


def _link_target_ok(member_parts: list[str], target: str) -> bool:
    if target.startswith("/"):
        return False
    depth = len(member_parts) - 1
    for p in target.split("/"):
        if p == "..":
            depth -= 1
            if depth < 0:
                return False
        elif p not in ("", "."):
            depth += 1
    return True


def plan_archive(data: bytes, fmt: str, max_total: int) -> list[tuple]:
    """Validates an archive and returns what to create, without touching the disk:
    (kind, parts, payload-reader, mode) tuples. Refuses escapes and bombs."""
    import tarfile
    import zipfile

    plan: list[tuple] = []
    total = 0
    if fmt == "zip":
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise BadArgument(f"not a zip archive: {exc}") from None
        infos = zf.infolist()
        if len(infos) > MAX_ARCHIVE_MEMBERS:
            raise FileTooLarge(f"archive has more than {MAX_ARCHIVE_MEMBERS} members")
        for info in infos:
            parts = check_member_name(info.filename)
            if not parts:
                continue
            mode = (info.external_attr >> 16) & 0o170000
            if mode == stat.S_IFLNK:
                raise PathEscape(f"archive member {info.filename!r} is a symlink; links are refused in zip uploads")
            total += info.file_size
            if total > max_total:
                raise FileTooLarge(f"archive expands past {max_total} bytes")
            if info.is_dir():
                plan.append(("dir", parts, None, 0o755))
            else:
                plan.append(("file", parts, (lambda i=info: zf.open(i)), 0o644))
        return plan
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
        members = tf.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BadArgument(f"not a tar archive: {exc}") from None
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise FileTooLarge(f"archive has more than {MAX_ARCHIVE_MEMBERS} members")
    for m in members:
        parts = check_member_name(m.name)
        if not parts:
            continue
        if m.issym() or m.islnk():
            if m.islnk():
                raise PathEscape(f"archive member {m.name!r} is a hard link; hard links are refused")
            if not _link_target_ok(parts, m.linkname):
                raise PathEscape(f"symlink {m.name!r} points outside the target: {m.linkname!r}")
            plan.append(("symlink", parts, m.linkname, 0))
        elif m.isdir():
            plan.append(("dir", parts, None, 0o755))
        elif m.isfile():
            total += m.size
            if total > max_total:
                raise FileTooLarge(f"archive expands past {max_total} bytes")
            plan.append(("file", parts, (lambda mm=m: tf.extractfile(mm)), m.mode & 0o755 or 0o644))
        else:
            raise PathEscape(f"archive member {m.name!r} is a device, fifo or other special file")
    return plan


def op_upload_archive(req: dict) -> dict:
    dest = split_path(req.get("path") or "")
    src = split_path(req["archive"])
    max_total = int(req.get("max_total") or 512 * 1024 * 1024)
    fd = _open_file("/".join(src), os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    plan = plan_archive(data, req.get("format") or "tar", max_total)
    written = 0
    symlinks = []
    for kind, parts, payload, mode in plan:
        full = dest + parts
        if kind == "dir":
            os.close(_open_dir_chain(full, create=True))
        elif kind == "symlink":
            symlinks.append((full, payload))
        else:
            out = _open_file("/".join(full), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, create_dirs=True)
            with os.fdopen(out, "wb") as fo, payload() as fi:
                while True:
                    block = fi.read(65536)
                    if not block:
                        break
                    written += len(block)
                    if written > max_total:  # declared sizes lied
                        raise FileTooLarge(f"archive expands past {max_total} bytes")
                    fo.write(block)
            os.chmod("/".join([WORKSPACE] + full), mode or 0o644, follow_symlinks=False)
    # Symlinks last, so no file of this archive is ever written through one.
    for full, target in symlinks:
        dfd = _open_dir_chain(full[:-1], create=True)
        try:
            os.symlink(target, full[-1], dir_fd=dfd)
        finally:
            os.close(dfd)
    os.unlink(os.path.join(WORKSPACE, *src))
    return {"files": sum(1 for p in plan if p[0] == "file"), "bytes": written}


def op_download_archive(req: dict) -> dict:
    import tarfile

    parts = split_path(req.get("path") or "")
    max_total = int(req.get("max_total") or 100 * 1024 * 1024)
    out_parts = split_path(req["archive"])
    buf = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        def add(rel: list[str]) -> None:
            nonlocal total
            dfd = _open_dir_chain(rel)
            try:
                for name in sorted(os.listdir(dfd)):
                    if rel + [name] == out_parts:
                        continue
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    arcname = "/".join(rel[len(parts):] + [name])
                    info = tarfile.TarInfo(arcname)
                    info.mtime = int(st.st_mtime)
                    info.mode = stat.S_IMODE(st.st_mode)
                    if stat.S_ISDIR(st.st_mode):
                        info.type = tarfile.DIRTYPE
                        tf.addfile(info)
                        add(rel + [name])
                    elif stat.S_ISLNK(st.st_mode):
                        info.type = tarfile.SYMTYPE
                        info.linkname = os.readlink(name, dir_fd=dfd)
                        tf.addfile(info)
                    elif stat.S_ISREG(st.st_mode):
                        total += st.st_size
                        if total > max_total:
                            raise FileTooLarge(f"download exceeds {max_total} bytes")
                        ffd = _open_nofollow(dfd, name, os.O_RDONLY)
                        with os.fdopen(ffd, "rb") as f:
                            info.size = st.st_size
                            tf.addfile(info, f)
            finally:
                os.close(dfd)

        add(parts)
    data = buf.getvalue()
    fd = _open_file("/".join(out_parts), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, create_dirs=True)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return {"archive": "/".join(out_parts), "size": len(data)}
