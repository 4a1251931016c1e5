"""Images of server requests: data URLs, size and pixel caps before decoding, truncated files, local paths,
and remote downloads (allow-list, public addresses only, same-host redirects, byte cap, deadline)."""
from __future__ import annotations

import base64
import http.server
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from vlbridge.serve.config import ImageLimits
from vlbridge.serve.errors import APIError
from vlbridge.serve.fetch import fetch, host_allowed, is_public
from vlbridge.serve.images import decode_image, load_request_image


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def refused(code: str, fn, *args, **kw) -> APIError:
    with pytest.raises(APIError) as info:
        fn(*args, **kw)
    assert info.value.status == 400 and info.value.code == code, info.value.body()
    return info.value


def test_a_data_url_decodes_to_the_same_rgb_pixels():
    image = Image.new("RGB", (5, 3), (10, 200, 30))
    image.putpixel((4, 2), (1, 2, 3))
    got = load_request_image(data_url(png(image)), ImageLimits())
    assert got.mode == "RGB" and np.array_equal(np.asarray(got), np.asarray(image))
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 0))                     # transparent -> composited on white
    assert load_request_image(data_url(png(rgba)), ImageLimits()).getpixel((0, 0)) == (255, 255, 255)


def test_oversized_base64_is_refused_before_decoding(monkeypatch):
    decoded = []
    monkeypatch.setattr(base64, "b64decode", lambda *a, **k: decoded.append(1) or b"")
    refused("image_too_large", load_request_image, "data:image/png;base64," + "A" * 4000, ImageLimits(max_bytes=1000))
    assert not decoded


def test_a_decompression_bomb_is_refused_from_its_header(monkeypatch):
    bomb = png(Image.new("1", (8000, 8000)))                              # 64 Mpixels in a few kB
    assert len(bomb) < 20_000
    loaded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loaded.append(1))
    err = refused("image_too_large", decode_image, bomb, ImageLimits(max_pixels=25_000_000), "messages[0]")
    assert "8000x8000" in err.message and err.param == "messages[0]"
    assert not loaded                                                     # no pixel was decoded


def test_truncated_garbage_and_non_images_are_refused():
    data = png(Image.effect_noise((64, 64), 50).convert("RGB"))
    refused("invalid_image", decode_image, data[: len(data) // 2], ImageLimits())
    refused("invalid_image", decode_image, b"GIF89a not really", ImageLimits())
    refused("invalid_image_url", load_request_image, "data:image/png;base64,@@@", ImageLimits())
    refused("invalid_image_url", load_request_image, "data:text/plain;base64,aGVsbG8=", ImageLimits())
    refused("invalid_image_url", load_request_image, "ftp://example.com/x.png", ImageLimits())


def test_local_paths_only_inside_the_allowed_folder(tmp_path):
    inside = tmp_path / "media"
    inside.mkdir()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(inside / "blue.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    (inside / "link.png").symlink_to(tmp_path / "secret.png")
    refused("local_path_not_allowed", load_request_image, str(inside / "blue.png"), ImageLimits())
    allowed = ImageLimits(local_dir=str(inside))
    assert load_request_image(str(inside / "blue.png"), allowed).getpixel((0, 0)) == (0, 0, 255)
    assert load_request_image("file://" + str(inside / "blue.png"), allowed).getpixel((0, 0)) == (0, 0, 255)
    for escape in (str(tmp_path / "secret.png"), str(inside / ".." / "secret.png"), str(inside / "link.png"),
                   "../secret.png"):
        refused("local_path_not_allowed", load_request_image, escape, allowed)


def test_remote_urls_are_refused_unless_allowed():
    refused("remote_images_disabled", load_request_image, "https://example.com/a.png", ImageLimits())
    refused("image_domain_not_allowed", load_request_image, "https://evil.test/a.png",
            ImageLimits(remote_domains=("example.com",)))
    assert host_allowed("cdn.example.com", ("example.com",)) and not host_allowed("badexample.com", ("example.com",))


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.8", "192.168.1.1", "172.16.5.4", "169.254.169.254",
                                     "::1", "fe80::1", "0.0.0.0", "::ffff:127.0.0.1", "100.64.0.1"])
def test_private_loopback_and_link_local_addresses_are_not_public(address):
    assert not is_public(address)


def test_a_name_resolving_to_a_private_address_is_refused():
    limits = ImageLimits(remote_domains=("localhost", "example.com"))
    refused("image_url_private_address", load_request_image, "http://localhost:9/a.png", limits)
    refused("image_url_private_address", fetch, "http://img.example.com/a.png", ("example.com",), 1000, 1.0,
            resolver=lambda host, port: ["93.184.216.34", "10.1.2.3"])


@pytest.fixture(scope="module")
def image_host():
    """A loopback HTTP server standing in for a remote image host (the tests accept its address)."""
    body = png(Image.new("RGB", (3, 3), (9, 8, 7)))

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            routes = {"/ok.png": (200, {"Content-Length": str(len(body))}, body),
                      "/big.png": (200, {}, b"x" * 5000),
                      "/here": (302, {"Location": "/ok.png"}, b""),
                      "/away": (302, {"Location": "http://other.test/ok.png"}, b""),
                      "/loop": (302, {"Location": "/loop"}, b"")}
            if self.path == "/slow.png":
                self.send_response(200)
                self.end_headers()
                for _ in range(30):
                    self.wfile.write(b"x" * 10)
                    self.wfile.flush()
                    time.sleep(0.05)
                return
            status, headers, content = routes.get(self.path, (404, {}, b""))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(content)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_remote_download_follows_same_host_redirects_within_limits(image_host):
    def get(path, **kw):
        return fetch(f"http://img.test:{image_host}{path}", ("img.test",), kw.pop("max_bytes", 1000),
                     kw.pop("timeout", 2.0), resolver=lambda host, port: ["127.0.0.1"], address_ok=lambda a: True)

    ok = decode_image(get("/ok.png"), ImageLimits())
    assert ok.getpixel((1, 1)) == (9, 8, 7)
    assert decode_image(get("/here"), ImageLimits()).getpixel((0, 0)) == (9, 8, 7)
    with pytest.raises(APIError, match="another host"):
        get("/away")
    with pytest.raises(APIError, match="redirects more than"):
        get("/loop")
    with pytest.raises(APIError, match="limit of 1000 bytes"):
        get("/big.png")
    with pytest.raises(APIError, match="longer than"):
        get("/slow.png", timeout=0.3)
    with pytest.raises(APIError, match="HTTP 404"):
        get("/missing.png")
