"""``wsslib download`` (through ./data_download.sh, its wrapper, and in-process) against a Python HTTP
server on 127.0.0.1 (random port, own thread) that serves tiny archives of every set in its real
layout (tests/data_fixtures.py): success, idempotent second run, checksum failures, damaged
archives, interrupted and resumed downloads, the manual sets, --list, --dry-run, unknown names.
Nothing leaves the machine."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import data_fixtures as fx
from conftest import ROOT
from wsslib.apps.cli import main
from wsslib.data import get_dataset
from wsslib.data.sources import COLUMNS, SOURCES_PATH, load_sources, source_names

SCRIPT = ROOT / "data_download.sh"
ROWS = load_sources()
LOADABLE = ("kvasir-seg", "oxford-pets", "tbx11k", "fire", "decathlon-prostate", "brats2020", "nci-isbi")


class FileServer:
    """Serves ``files`` ({"/name/file": bytes}) with HTTP Range support; a path in ``drop_once``
    gets half its body and a closed connection the first time it is requested without a Range."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.drop_once, self.log = dict(files), set(), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                rng = self.headers.get("Range")
                server.log.append((self.command, self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body:
                    return
                if not rng and self.path in server.drop_once:
                    server.drop_once.discard(self.path)
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def gets(self, path: str) -> list[str | None]:
        """The Range headers of the GET requests of ``path``, in order."""
        return [r for m, p, r in self.log if m == "GET" and p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[tuple[str, str], bytes]:
    """Every file of the source table, built in its real layout and packed as the table says."""
    out = {}
    for row in ROWS:
        content = tmp_path_factory.mktemp(row.file.replace(".", "_"))
        fx.CONTENT[(row.name, row.file)](content)
        out[(row.name, row.file)] = fx.make_archive(content, row.unpack, row.file)
    return out


def write_table(path: Path, archives, override: dict[tuple[str, str], str] | None = None) -> Path:
    """The real table with each pinned hash replaced by the fixture's hash (same algorithm) or by
    ``override[(name, file)]``; trust-on-first-use rows stay so."""
    lines = []
    for line in SOURCES_PATH.read_text().splitlines():
        cells = line.split("\t")
        if len(cells) == len(COLUMNS) and cells[0] != "name" and not line.startswith("#"):
            key, checksum = (cells[0], cells[1]), cells[4]
            if override and key in override:
                cells[4] = override[key]
            elif checksum != "tofu":
                algo = checksum.split(":")[0]
                cells[4] = f"{algo}:{hashlib.new(algo, archives[key]).hexdigest()}"
        lines.append("\t".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def server(archives):
    srv = FileServer({f"/{n}/{f}": data for (n, f), data in archives.items()})
    yield srv
    srv.close()


@pytest.fixture()
def env(tmp_path, archives, server):
    e = {k: v for k, v in os.environ.items() if not k.startswith("WSSLIB_")}
    e.update(WSSLIB_MIRROR=server.url, WSSLIB_SOURCES=str(write_table(tmp_path / "sources.tsv", archives)),
             WSSLIB_RETRY_WAIT="0", WSSLIB_CACHE=str(tmp_path / "cache"))
    return e


def run(args, env, timeout=60) -> subprocess.CompletedProcess:
    """./data_download.sh with this test's Python (the wrapper runs ``python -m wsslib download``)."""
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**env, "PYTHON": sys.executable}, timeout=timeout)


def leftovers(root: Path) -> list[Path]:
    """Temporary unpack folders left under the data root."""
    tmp = root / ".wsslib" / "tmp"
    return sorted(tmp.iterdir()) if tmp.is_dir() else []


def provided(root: Path, name: str) -> bool:
    return all(any(list(root.glob(alt)) for alt in group) for r in ROWS if r.name == name for group in r.provides)


# ----------------------------------------------------------------------------------------------


def test_list_prints_every_set_with_size_and_source():
    r = run(["--list"], dict(os.environ), timeout=30)
    assert r.returncode == 0, r.stderr
    for row in ROWS:
        line = next(ln for ln in r.stdout.splitlines() if ln.split()[:2] == [row.name, row.file])
        assert row.size in line and row.url in line and row.access in line
        assert ("TOFU" if row.checksum == "tofu" else row.algorithm) in line
    assert "Licences:" in r.stdout and "CC BY-SA 4.0" in r.stdout


def test_unknown_name_and_bad_usage(tmp_path):
    root = tmp_path / "data"
    r = run(["--root", str(root), "kvasir-seg", "no-such-set"], dict(os.environ))
    assert r.returncode == 2
    assert "unknown data set 'no-such-set'" in r.stderr and "kvasir-seg" in r.stderr and "brats2020" in r.stderr
    assert not root.exists()  # nothing done for the valid name either
    assert run([], dict(os.environ)).returncode == 2
    bad = run(["--frobnicate", "fire"], dict(os.environ))
    assert bad.returncode == 2 and "unrecognized arguments: --frobnicate" in bad.stderr
    assert run(["--help"], dict(os.environ)).returncode == 0


def test_dry_run_downloads_and_writes_nothing(tmp_path, env, server):
    root = tmp_path / "data"
    r = run(["--dry-run", "--root", str(root), "all"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"would download {server.url}/kvasir-seg/kvasir-seg.zip" in r.stdout
    assert f"unpack it into {root}/decathlon-prostate" in r.stdout
    assert not root.exists() and server.log == []


def test_install_every_set_then_second_run_does_nothing(tmp_path, env, server):
    root = tmp_path / "data"
    r = run(["--root", str(root), "all"], env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in source_names():
        assert provided(root, name), name
    assert leftovers(root) == [] and list((root / ".wsslib" / "downloads").iterdir()) == []
    # trust on first use: every unpinned file recorded, with a warning that says so
    lock = (root / ".wsslib" / "checksums.lock").read_text().splitlines()
    tofu = [(row.name, row.file) for row in ROWS if row.checksum == "tofu"]
    assert sorted(tuple(ln.split("\t")[:2]) for ln in lock) == sorted(tofu)
    assert r.stderr.count("none is pinned in the repository") == len(tofu)
    # the loaders read what the script installed
    for name in LOADABLE:
        ds = get_dataset(name, root=root / name, split="all")
        assert len(ds) > 0 and ds[0].image.dtype.name == "uint8", name
    assert get_dataset("kvasir-seg", root=root / "kvasir-seg", split="all")[0].gaze is not None
    assert get_dataset("nci-isbi", root=root / "nci-isbi", split="all")[0].gaze is not None
    # second run: nothing downloaded, nothing changed, and it says so
    n_requests = len(server.log)
    again = run(["--root", str(root), "all"], env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("nothing to do") == len(ROWS) and len(server.log) == n_requests
    assert again.stderr == ""


def test_interrupted_download_resumes(tmp_path, env, server):
    root = tmp_path / "data"
    path = "/kvasir-seg/kvasir-seg.zip"
    server.drop_once.add(path)
    r = run(["--root", str(root), "kvasir-seg"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "interrupted; resuming" in r.stderr
    size = len(server.files[path])
    assert server.gets(path) == [None, f"bytes={size // 2}-"]  # the second request continues
    assert len(list((root / "kvasir-seg" / "Kvasir-SEG" / "images").iterdir())) == len(fx.KVASIR_IDS)


def test_partial_file_from_an_earlier_run_resumes(tmp_path, env, server, archives):
    root = tmp_path / "data"
    data = archives[("decathlon-prostate", "Task05_Prostate.tar")]
    part = root / ".wsslib" / "downloads" / "Task05_Prostate.tar.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    r = run(["--root", str(root), "decathlon-prostate"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming" in r.stdout and server.gets("/decathlon-prostate/Task05_Prostate.tar") == ["bytes=1000-"]
    assert "md5 ok" in r.stdout and provided(root, "decathlon-prostate")
    # a complete .part (a run stopped between download and check) is checked, not fetched again
    root2 = tmp_path / "data2"
    (root2 / ".wsslib" / "downloads").mkdir(parents=True)
    (root2 / ".wsslib" / "downloads" / "Task05_Prostate.tar.part").write_bytes(data)
    r2 = run(["--root", str(root2), "decathlon-prostate"], env)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert provided(root2, "decathlon-prostate")


def test_pinned_checksum_mismatch_changes_nothing(tmp_path, env, archives):
    root = tmp_path / "data"
    mine = root / "oxford-pets" / "my_notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep me")
    table = write_table(tmp_path / "bad.tsv", archives, {("oxford-pets", "images.tar.gz"): "md5:" + "0" * 32})
    r = run(["--root", str(root), "oxford-pets"], {**env, "WSSLIB_SOURCES": str(table)})
    assert r.returncode == 1
    assert "md5 checksum mismatch: expected " + "0" * 32 in r.stderr and "nothing under" in r.stderr
    assert mine.read_text() == "keep me" and not (root / "oxford-pets" / "images").exists()
    assert (root / ".wsslib" / "downloads" / "images.tar.gz.bad").is_file()
    assert leftovers(root) == []
    assert "failed: oxford-pets" in r.stderr


def test_changed_file_fails_against_the_first_use_record(tmp_path, env):
    root = tmp_path / "data"
    (root / ".wsslib").mkdir(parents=True)
    (root / ".wsslib" / "checksums.lock").write_text("kvasir-seg\tkvasir-seg.zip\t" + "ab" * 32 + "\t2026-01-01T00:00:00Z\tx\n")
    r = run(["--root", str(root), "kvasir-seg"], env)
    assert r.returncode == 1 and "recorded on first use" in r.stderr
    assert not (root / "kvasir-seg").exists() and leftovers(root) == []


def test_damaged_or_foreign_archive_leaves_no_half_unpacked_folder(tmp_path, env, server, archives):
    """fire has no published hash (first use): a damaged download must not be recorded as trusted."""
    root = tmp_path / "data"
    path = "/fire/fire-segmentation-image-dataset.zip"
    good = archives[("fire", "fire-segmentation-image-dataset.zip")]
    server.files[path] = good[: len(good) * 2 // 3]  # the zip's central directory is cut off
    r = run(["--root", str(root), "fire"], env)
    assert r.returncode == 1 and "could not unpack" in r.stderr
    assert not (root / "fire").exists() and leftovers(root) == []
    assert not (root / ".wsslib" / "checksums.lock").exists()  # nothing trusted
    assert (root / ".wsslib" / "downloads" / "fire-segmentation-image-dataset.zip.bad").is_file()
    # an archive of another layout is refused before anything is moved into place
    server.files[path] = archives[("kvasir-seg", "kvasir-seg.zip")]
    r = run(["--root", str(root), "fire"], env)
    assert r.returncode == 1 and "expected layout" in r.stderr and "Kvasir-SEG" in r.stderr
    assert not (root / "fire").exists() and leftovers(root) == []
    assert not (root / ".wsslib" / "checksums.lock").exists()
    # the right file then installs, and only its hash is recorded
    server.files[path] = good
    r = run(["--root", str(root), "fire"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    lock = (root / ".wsslib" / "checksums.lock").read_text().splitlines()
    assert [ln.split("\t")[:3] for ln in lock] == [["fire", "fire-segmentation-image-dataset.zip", hashlib.sha256(good).hexdigest()]]


def test_existing_folder_is_never_overwritten(tmp_path, env):
    root = tmp_path / "data"
    mine = root / "kvasir-seg" / "Kvasir-SEG" / "readme.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own copy")
    r = run(["--root", str(root), "kvasir-seg"], env)
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    assert mine.read_text() == "my own copy" and sorted(p.name for p in mine.parent.iterdir()) == ["readme.txt"]
    assert leftovers(root) == []


def test_set_unpacked_by_hand_is_verified_and_left_alone(tmp_path, env, server):
    root = tmp_path / "data"
    fx.build_set("tbx11k", root / "tbx11k")
    r = run(["--root", str(root), "tbx11k"], env)
    assert r.returncode == 0, r.stderr
    assert "already present (not installed by this command" in r.stdout and "files)" in r.stdout
    assert server.log == []


def test_manual_set_prints_steps_then_verifies_the_dropped_file(tmp_path, env, archives, server):
    root = tmp_path / "data"
    no_mirror = {k: v for k, v in env.items() if k != "WSSLIB_MIRROR"}
    r = run(["--root", str(root), "brats2020"], no_mirror)
    assert r.returncode == 3, r.stdout + r.stderr
    out = r.stdout
    assert "must be fetched by hand" in out and "https://ipp.cbica.upenn.edu" in out
    assert f"Put MICCAI_BraTS2020_TrainingData.zip into {root}/downloads/" in out
    assert "need the manual steps above: brats2020" in out and server.log == []
    dropped = root / "downloads" / "MICCAI_BraTS2020_TrainingData.zip"
    dropped.parent.mkdir(parents=True, exist_ok=True)
    dropped.write_bytes(archives[("brats2020", "MICCAI_BraTS2020_TrainingData.zip")])
    r = run(["--root", str(root), "brats2020"], no_mirror)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "none is pinned in the repository" in r.stderr and dropped.is_file()  # the user's file stays
    assert provided(root, "brats2020") and server.log == []
    assert "nothing to do" in run(["--root", str(root), "brats2020"], no_mirror).stdout


def test_missing_file_on_the_server_fails_cleanly(tmp_path, env, server):
    root = tmp_path / "data"
    del server.files["/gaze/nci-isbi_fixation.csv"]
    r = run(["--root", str(root), "gaze"], {**env, "WSSLIB_RETRIES": "2"})
    assert r.returncode == 1 and "failed 2 times" in r.stderr
    assert (root / "kvasir-seg" / "gaze" / "kvasir_fixation.csv").is_file()  # the other file of the set
    assert not (root / "nci-isbi").exists() and leftovers(root) == []


def test_the_command_in_process_lists_dry_runs_and_installs(tmp_path, env, server, capsys, monkeypatch):
    """``wsslib download`` itself (what a wheel install has: no script), with the CLI's exit codes."""
    for k, v in env.items():
        if k.startswith("WSSLIB_"):
            monkeypatch.setenv(k, v)
    root = tmp_path / "data"
    assert main(["download", "--list"]) == 0
    assert "kvasir-seg.zip" in capsys.readouterr().out
    assert main(["download", "--dry-run", "--root", str(root), "gaze"]) == 0
    assert "would download" in capsys.readouterr().out and not root.exists() and server.log == []
    assert main(["download", "--root", str(root), "gaze"]) == 0
    assert (root / "kvasir-seg" / "gaze" / "kvasir_fixation.csv").is_file()
    assert main(["download", "--root", str(root), "no-such-set"]) == 2
    assert main(["download"]) == 2  # no name
    assert "unknown data set 'no-such-set'" in capsys.readouterr().err
