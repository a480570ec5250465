"""Fetch, verify and unpack the real data sets into ``<root>/<name>``: ``wsslib download NAME...``.

The sources (URL, size, checksum, licence, layout) are the rows of ``wsslib/data/sources.tsv``
(:mod:`wsslib.data.sources`). What :func:`download_sets` guarantees:

* downloads go to ``<root>/.wsslib/downloads/<file>.part`` and resume with an HTTP ``Range``
  request after an interruption, within a run (``retries`` tries) and across runs;
* every file is checked before anything is unpacked: against the md5/sha256 pinned in the table,
  or, where no hash is published, against the sha256 recorded on first use (trust on first use)
  in ``<root>/.wsslib/checksums.lock`` (recorded once the first copy has installed), with a
  warning that says so;
* archives unpack into a temporary folder under ``<root>/.wsslib/tmp``, are checked for the
  expected layout, then moved into place; a failure removes that folder and touches nothing that
  was already under ``<root>``; existing files are never overwritten;
* a second run finds the installed files and does nothing (and says so);
* sets behind a login or a licence click print the steps to fetch them by hand and the folder
  (``<root>/downloads``) to put the file in; the next run verifies and unpacks it.

Why not pooch (the kept library for this): pooch downloads each file whole into a temporary file
and starts again after an interruption (no ``Range`` resume, which the multi-GB sets need), and
has no trust-on-first-use record or manual-download flow; the standard library's ``urllib``,
``hashlib``, ``zipfile`` and ``tarfile`` cover the rest.

Environment: ``WSSLIB_DATA`` (default root), ``WSSLIB_MIRROR`` (base URL that replaces the
official hosts: files are fetched from ``$WSSLIB_MIRROR/<name>/<file>``, also for manual sets),
``WSSLIB_SOURCES`` (another table, for tests), ``WSSLIB_RETRIES`` (tries per file, default 3),
``WSSLIB_RETRY_WAIT`` (seconds between tries, default 2).

Exit status of :func:`download_sets`: 0 done (or nothing to do), 1 a download, check or unpack
failed, 2 usage error (an unknown name), 3 some set needs the manual steps printed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from wsslib.data.sources import SOURCES_PATH, SourceFile, default_data_root, load_sources, source_names

__all__ = ["DONE", "FAILED", "MANUAL", "USAGE", "download_sets", "format_list"]

DONE, FAILED, USAGE, MANUAL = 0, 1, 2, 3
_CHUNK = 1 << 20


class _Failure(Exception):
    """One file could not be installed; the message has been printed."""


def format_list(rows: Sequence[SourceFile], sources: Path = SOURCES_PATH) -> str:
    """Every data set file with its size, access, checksum kind and source, then the licences."""
    fmt = "{:<19} {:<36} {:<9} {:<7} {:<8} {}"
    lines = [fmt.format("NAME", "FILE", "SIZE", "ACCESS", "CHECKSUM", "SOURCE")]
    for r in rows:
        lines.append(fmt.format(r.name, r.file, r.size, r.access, r.algorithm or "TOFU", r.url))
    lines += ["", f"CHECKSUM: md5/sha256 = pinned in {sources.name}; TOFU = no published hash: the",
              "sha256 is recorded on first download in <root>/.wsslib/checksums.lock and checked after that.",
              "ACCESS manual = behind a login or licence click: the command prints the steps.", "Licences:"]
    lines += [f"  {name}: {next(r.licence for r in rows if r.name == name)}" for name in dict.fromkeys(r.name for r in rows)]
    return "\n".join(lines)


@dataclass
class _Run:
    """The state of one ``download_sets`` call: where things go and how to talk."""

    root: Path
    dry_run: bool
    keep_archives: bool
    mirror: str
    retries: int
    retry_wait: float
    sources: Path
    prog: str
    out: TextIO
    err: TextIO
    progress: bool

    @property
    def state(self) -> Path:
        return self.root / ".wsslib"

    @property
    def dl(self) -> Path:
        return self.state / "downloads"

    @property
    def lock(self) -> Path:
        return self.state / "checksums.lock"

    @property
    def drop(self) -> Path:
        return self.root / "downloads"

    def info(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    def warn(self, msg: str) -> None:
        print(f"{self.prog}: WARNING: {msg}", file=self.err, flush=True)

    def error(self, msg: str) -> None:
        print(f"{self.prog}: error: {msg}", file=self.err, flush=True)


def _exists(root: Path, pattern: str) -> bool:
    return any(root.glob(pattern)) if any(c in pattern for c in "*?[") else (root / pattern).exists()


def _provides_ok(row: SourceFile, base: Path) -> bool:
    """Every group of ``row.provides`` has one alternative that exists under ``base``."""
    return all(any(_exists(base, alt) for alt in group) for group in row.provides)


def _provides_ok_in(row: SourceFile, tmp: Path) -> bool:
    """The groups that fall under ``row.dest``, checked inside an unpack folder (relative to dest)."""
    prefix = row.dest + "/"
    for group in row.provides:
        under = [alt[len(prefix):] for alt in group if alt.startswith(prefix)]
        if under and not any(_exists(tmp, alt) for alt in under):
            return False
    return True


def _hash(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _lock_lookup(run: _Run, row: SourceFile) -> str | None:
    if not run.lock.is_file():
        return None
    found = None
    for line in run.lock.read_text().splitlines():
        cells = line.split("\t")
        if len(cells) >= 3 and cells[0] == row.name and cells[1] == row.file:
            found = cells[2]
    return found


def _verify(run: _Run, row: SourceFile, path: Path, owned: bool) -> str | None:
    """Check ``path`` against the pinned or recorded hash. Returns the sha256 to record on first
    use (or None); raises :class:`_Failure` on a mismatch (an owned download is moved to .bad)."""
    if row.checksum == "tofu":
        actual = _hash(path, "sha256")
        recorded = _lock_lookup(run, row)
        if recorded is None:
            run.info(f"  {row.file}: sha256 {actual} (no published hash; recorded once it has installed)")
            return actual
        algo, expected = "sha256", recorded
    else:
        algo, expected = row.algorithm, row.digest
        actual = _hash(path, algo)
    if actual == expected:
        run.info(f"  {row.file}: {algo} ok ({actual})")
        return None
    if row.checksum == "tofu":
        run.error(f"{row.name}/{row.file}: sha256 {actual} differs from {expected} recorded on first use in {run.lock}. "
                  f"The file changed since then (a corrupt download, or a new release): check it; to accept the new "
                  f"file, delete its line from {run.lock} and run again.")
    else:
        run.error(f"{row.name}/{row.file}: {algo} checksum mismatch: expected {expected} (pinned in {run.sources}), "
                  f"got {actual}.")
    if owned:
        os.replace(path, run.dl / f"{row.file}.bad")
        run.error(f"  the download was moved to {run.dl / (row.file + '.bad')} for inspection; nothing under "
                  f"{run.root} was changed. Run again to download afresh (check WSSLIB_MIRROR if you set it).")
    else:
        run.error(f"  your file {path} was left as it is; nothing under {run.root} was changed.")
    raise _Failure


def _fetch_once(run: _Run, url: str, part: Path) -> None:
    """One resumable attempt: append to ``part`` from its size on (HTTP Range). Raises OSError
    (URLError, IncompleteRead...) when the transfer breaks."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=30)  # noqa: S310 - http(s) URLs of the source table
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is complete already (a run stopped before the check)
            return
        raise
    with resp:
        mode = "ab"
        if have and resp.status != 206:  # the server ignores Range: start this file again
            run.warn(f"{url}: the server cannot resume downloads; starting again from the beginning")
            mode = "wb"
        total = resp.headers.get("Content-Length")
        bar = None
        if run.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=part.name[:-5],
                       file=run.err, leave=False)
        got = 0
        try:
            with open(part, mode) as f:
                while block := resp.read(_CHUNK):
                    f.write(block)
                    got += len(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and got < int(total):
            raise http.client.IncompleteRead(b"", int(total) - got)


def _download(run: _Run, row: SourceFile, url: str) -> tuple[Path, str | None]:
    """Fetch (resuming) and verify. Returns the verified archive and the sha256 to record."""
    part, final = run.dl / f"{row.file}.part", run.dl / row.file
    run.dl.mkdir(parents=True, exist_ok=True)
    if final.is_file():
        run.info(f"  found the earlier download {final}; checking it")
        try:
            return final, _verify(run, row, final, owned=True)
        except _Failure:
            run.info("  downloading it again")
    if part.is_file() and part.stat().st_size:
        run.info(f"  resuming {part} ({part.stat().st_size} bytes so far)")
    run.info(f"  downloading {url}")
    attempt = 1
    while True:
        try:
            _fetch_once(run, url, part)
            break
        except (OSError, http.client.HTTPException) as e:
            if attempt >= run.retries:
                run.error(f"{row.name}/{row.file}: the download from {url} failed {attempt} times ({e}). What "
                          f"arrived is kept in {part} and the next run resumes from there. Nothing under "
                          f"{run.root / row.dest} was changed.")
                raise _Failure from None
            attempt += 1
            run.warn(f"{row.name}/{row.file}: the download was interrupted; resuming (try {attempt} of "
                     f"{run.retries}; {type(e).__name__}: {e})")
            time.sleep(run.retry_wait)
    tofu = _verify(run, row, part, owned=True)
    os.replace(part, final)
    return final, tofu


def _safe_members(names: Sequence[str], archive: Path) -> None:
    for n in names:
        p = Path(n)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"{archive} holds the entry {n!r}, which points outside the folder it unpacks into")


def _extract(kind: str, archive: Path, tmp: Path, file: str) -> None:
    if kind == "zip":
        with zipfile.ZipFile(archive) as z:
            _safe_members(z.namelist(), archive)
            z.extractall(tmp)
    elif kind in ("tar", "tar.gz"):
        with tarfile.open(archive, "r:gz" if kind == "tar.gz" else "r:") as t:
            _safe_members(t.getnames(), archive)
            if hasattr(tarfile, "data_filter"):
                t.extractall(tmp, filter="data")
            else:  # pragma: no cover - Python 3.11 before 3.11.4
                t.extractall(tmp)  # noqa: S202 - member paths checked above
    else:  # "file"
        shutil.copyfile(archive, tmp / file)


def _set_aside(run: _Run, row: SourceFile, archive: Path, owned: bool) -> None:
    if owned and archive.is_file():
        os.replace(archive, run.dl / f"{row.file}.bad")
        run.error(f"  the download was moved to {run.dl / (row.file + '.bad')}; run again to download it afresh.")


def _unpack(run: _Run, row: SourceFile, archive: Path, owned: bool) -> None:
    """Unpack into a temporary folder, check the layout, then move into ``root/dest``."""
    (run.state / "tmp").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{row.name}.", dir=run.state / "tmp"))
    try:
        run.info(f"  {'placing' if row.unpack == 'file' else 'unpacking'} {row.file} ...")
        try:
            _extract(row.unpack, archive, tmp, row.file)
        except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, ValueError) as e:
            run.error(f"{row.name}/{row.file}: could not unpack {archive} ({e}): the archive is damaged or incomplete. "
                      "Nothing was installed; the partial unpack was removed.")
            _set_aside(run, row, archive, owned)
            raise _Failure from None
        if not _provides_ok_in(row, tmp):
            top = " ".join(sorted(p.name for p in tmp.iterdir())[:5])
            run.error(f"{row.name}/{row.file}: the archive does not have the expected layout (expected under "
                      f"{run.root}: {','.join('|'.join(g) for g in row.provides)}; its top level holds: {top}). "
                      "Nothing was installed.")
            _set_aside(run, row, archive, owned)
            raise _Failure
        dest = run.root / row.dest
        entries = sorted(tmp.iterdir())
        conflicts = [dest / e.name for e in entries if (dest / e.name).exists() or (dest / e.name).is_symlink()]
        if conflicts:
            run.error(f"{row.name}/{row.file}: refusing to overwrite what is already there: "
                      f"{' '.join(map(str, conflicts))}. Move it away (or delete it) and run again. Nothing was changed.")
            raise _Failure
        dest.mkdir(parents=True, exist_ok=True)
        for e in entries:
            os.replace(e, dest / e.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    marker = run.state / "installed" / row.name / row.file
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{row.file}\t{_now()}\n")
    if owned and not run.keep_archives:
        archive.unlink(missing_ok=True)
    run.info(f"  installed into {dest}")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record_tofu(run: _Run, row: SourceFile, sha: str, src: str) -> None:
    run.state.mkdir(parents=True, exist_ok=True)
    with open(run.lock, "a") as f:
        f.write(f"{row.name}\t{row.file}\t{sha}\t{_now()}\t{src}\n")
    run.warn(f"{row.name}/{row.file}: no checksum is published for this file, so none is pinned in the repository. "
             f"Its sha256 {sha} is now recorded in {run.lock} (trust on first use); later downloads must match it. "
             "To be sure of this copy, compare the hash with a colleague's or the provider's.")


def _describe_found(run: _Run, row: SourceFile) -> None:
    for group in row.provides:
        for alt in group:
            for p in sorted(run.root.glob(alt)):
                if p.is_dir():
                    run.info(f"    {p} ({sum(1 for q in p.rglob('*') if q.is_file())} files)")
                else:
                    run.info(f"    {p} ({p.stat().st_size} bytes)")


def _print_manual(run: _Run, row: SourceFile) -> None:
    steps = [s.replace("<root>", str(run.root)) for s in row.steps]
    lines = ["", f"== {row.name}: {row.file} must be fetched by hand (login or licence) ==", f"  source:  {row.url}",
             f"  licence: {row.licence}", "  steps:"]
    lines += [f"    {n}. {s}" for n, s in enumerate(steps, start=1)]
    n = len(steps) + 1
    wanted = " and ".join(" or ".join(g) for g in row.provides)
    lines += [f"    {n}. Put {row.file} into {run.drop}/ and run again:  {run.prog} --root {run.root} {row.name}",
              f"       (it is verified, its sha256 recorded and it is unpacked into {run.root / row.dest};",
              f"        or unpack it yourself so that these exist under {run.root}: {wanted})", ""]
    run.info("\n".join(lines))


def _install(run: _Run, row: SourceFile) -> int:
    """One row: DONE, FAILED or MANUAL."""
    src = f"{run.mirror}/{row.name}/{row.file}" if run.mirror else row.url
    run.info(f"[{row.name}] {row.file}")
    if _provides_ok(row, run.root):
        if (run.state / "installed" / row.name / row.file).is_file():
            run.info(f"  already installed in {run.root / row.dest}: nothing to do")
        else:
            run.info("  already present (not installed by this command; left as it is), found:")
            _describe_found(run, row)
        return DONE
    dropped = run.drop / row.file
    try:
        if dropped.is_file():
            run.info(f"  using {dropped} (put there by hand; it is never deleted)")
            if run.dry_run:
                run.info(f"  [dry-run] would verify it ({row.checksum}) and unpack it into {run.root / row.dest}")
                return DONE
            archive, owned, tofu = dropped, False, _verify(run, row, dropped, owned=False)
        elif row.access == "manual" and not run.mirror:
            _print_manual(run, row)
            return MANUAL
        else:
            if run.dry_run:
                run.info(f"  [dry-run] would download {src} ({row.size}) to {run.dl / (row.file + '.part')},")
                run.info(f"  [dry-run] verify it ({row.checksum}) and unpack it into {run.root / row.dest}")
                return DONE
            (archive, tofu), owned = _download(run, row, src), True
        _unpack(run, row, archive, owned)
    except _Failure:
        return FAILED
    if tofu is not None:
        _record_tofu(run, row, tofu, src)
    if not _provides_ok(row, run.root):
        run.error(f"{row.name}/{row.file}: unpacked, but these are still missing under {run.root}: "
                  f"{','.join('|'.join(g) for g in row.provides)}")
        return FAILED
    return DONE


def download_sets(
    names: Sequence[str],
    root: str | os.PathLike | None = None,
    *,
    dry_run: bool = False,
    keep_archives: bool = False,
    sources: str | os.PathLike | None = None,
    mirror: str | None = None,
    retries: int | None = None,
    retry_wait: float | None = None,
    prog: str = "wsslib download",
    out: TextIO | None = None,
    err: TextIO | None = None,
    progress: bool | None = None,
) -> int:
    """Fetch, verify and unpack the data sets ``names`` (``"all"``: every one) into ``root/<name>``.

    Args:
        names: data set names of the source table, or ``"all"``; an unknown name stops everything
            before anything is done.
        root: data folder (default :func:`~wsslib.data.sources.default_data_root`: ``$WSSLIB_DATA``,
            else the repository's ``data/`` in a source checkout, else the user's data folder).
        dry_run: say what would be done; download and write nothing.
        keep_archives: keep the downloaded archives in ``root/.wsslib/downloads`` after unpacking.
        sources, mirror, retries, retry_wait: default ``$WSSLIB_SOURCES`` (else the packaged
            table), ``$WSSLIB_MIRROR``, ``$WSSLIB_RETRIES`` (3), ``$WSSLIB_RETRY_WAIT`` (2 s).
        prog: the command name used in messages (``./data_download.sh`` for the script).
        out, err: streams for progress and for warnings/errors (default stdout, stderr).
        progress: byte progress bars on ``err`` (default: when ``err`` is a terminal).

    Returns:
        0 done (or nothing to do), 1 something failed, 2 unknown name, 3 manual steps needed.
    """
    out, err = out or sys.stdout, err or sys.stderr
    env = os.environ
    table = Path(sources or env.get("WSSLIB_SOURCES") or SOURCES_PATH)
    rows = load_sources(table)
    known = source_names(table)
    selected: list[str] = []
    for nm in names:
        if nm == "all":
            selected += known
        elif nm in known:
            selected.append(nm)
        else:
            print(f"{prog}: error: unknown data set '{nm}'; known: {' '.join(known)} (or: all)", file=err)
            return USAGE
    if not selected:
        print(f"{prog}: error: name at least one data set (known: {' '.join(known)}), or all", file=err)
        return USAGE
    root = Path(root if root is not None else default_data_root()).expanduser().absolute()
    run = _Run(root=root, dry_run=dry_run, keep_archives=keep_archives,
               mirror=(mirror if mirror is not None else env.get("WSSLIB_MIRROR", "")).rstrip("/"),
               retries=int(retries if retries is not None else env.get("WSSLIB_RETRIES", 3)),
               retry_wait=float(retry_wait if retry_wait is not None else env.get("WSSLIB_RETRY_WAIT", 2)),
               sources=table, prog=prog, out=out, err=err,
               progress=err.isatty() if progress is None else progress)
    if dry_run:
        run.info("Dry run: nothing is downloaded or written.")
    run.info(f"Data folder: {root}")
    ok, manual, failed = [], [], []
    try:
        for nm in dict.fromkeys(selected):
            status = DONE
            for row in (r for r in rows if r.name == nm):
                rc = _install(run, row)
                if rc == FAILED:
                    status = FAILED
                elif rc == MANUAL and status == DONE:
                    status = MANUAL
            {DONE: ok, MANUAL: manual, FAILED: failed}[status].append(nm)
    except KeyboardInterrupt:
        run.error("interrupted; unpacked nothing half-way (partial downloads resume next time)")
        return 130
    run.info("")
    if ok:
        run.info(f"ready: {' '.join(ok)}")
    if manual:
        run.info(f"need the manual steps above: {' '.join(manual)}")
    if failed:
        run.error(f"failed: {' '.join(failed)} (see the messages above)")
    if ok and not dry_run and root != default_data_root().absolute():
        run.info(f"The loaders find these sets with WSSLIB_DATA={root} (or root={root}/<name>).")
    return FAILED if failed else MANUAL if manual else DONE
