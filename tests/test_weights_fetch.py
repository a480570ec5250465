"""`wsslib weights fetch`: torchvision's ImageNet weights downloaded on request, hash-checked,
served here by a local HTTP server (no network)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import pytest

from wsslib.apps.cli import main
from wsslib.models import weights


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _publish(root, content: bytes, stem: str = "resnet18", digest: str | None = None) -> str:
    name = f"{stem}-{digest or hashlib.sha256(content).hexdigest()[:8]}.pth"
    (root / name).write_bytes(content)
    return name


def test_downloads_checks_the_hash_and_does_not_download_twice(server, tmp_path):
    root, base = server
    name = _publish(root, b"weights of a network")
    dest = tmp_path / "hub"
    first = weights.fetch_weights(["resnet18"], dest, progress=False, url_of=lambda n: f"{base}/{name}")
    assert [(r.status, r.path.name) for r in first] == [("downloaded", name)]
    assert (dest / name).read_bytes() == b"weights of a network"
    (root / name).unlink()  # a second call must not need the server
    again = weights.fetch_weights(["resnet18"], dest, progress=False, url_of=lambda n: f"{base}/{name}")
    assert again[0].status == "present"


def test_a_file_that_does_not_match_its_hash_is_refused_and_not_kept(server, tmp_path):
    root, base = server
    name = _publish(root, b"tampered", digest="deadbeef")
    dest = tmp_path / "hub"
    with pytest.raises(RuntimeError, match="(?i)hash"):
        weights.fetch_weights(["resnet50"], dest, progress=False, url_of=lambda n: f"{base}/{name}")
    assert not (dest / name).exists()


def test_packaged_and_weightless_backbones_need_nothing(tmp_path):
    res = weights.fetch_weights(["efficientnet_lite1", "vit_small"], tmp_path, progress=False)
    assert [r.status for r in res] == ["packaged", "none"] and not any(tmp_path.iterdir())


def test_cli_rejects_unknown_names_before_downloading(tmp_path, capsys):
    assert main(["weights", "fetch", "resnet18", "not_a_net", "--dir", str(tmp_path)]) == 2  # a usage error
    assert "not_a_net" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_urls_are_torchvisions_defaults():
    import torchvision.models as tvm

    assert weights.weights_url("resnet50") == tvm.ResNet50_Weights.DEFAULT.url
    assert weights.weights_url("densenet121").startswith("https://download.pytorch.org/")
    with pytest.raises(ValueError):
        weights.weights_url("efficientnet_lite0")
