"""The VLM client against a real local HTTP server that plays an OpenAI-compatible endpoint."""

import base64
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from ltg_jax import vlm


def ok_body(text: str) -> bytes:
    """An OpenAI chat completion body answering text."""
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


class FakeServer:
    """Scripted responses [(status, body, wait_for_release)], one per request; records requests."""

    def __init__(self, responses):
        self.responses = list(responses)
        self.requests = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length),
                    }
                )
                status, body, hang = server.responses.pop(0)
                if hang:
                    server.release.wait(5)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(*responses):
        servers.append(FakeServer(responses))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def decode_png(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    raw = base64.b64decode(url.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(raw)))


def test_png_data_url_upscales_exactly():
    img = np.linspace(-1, 1, 16 * 16 * 3).reshape(16, 16, 3)
    px = decode_png(vlm.png_data_url(img))
    assert px.shape == (128, 128, 3)
    u8 = np.round((img + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(px[::8, ::8], u8)
    gray = decode_png(vlm.png_data_url(np.zeros((28, 28, 1))))
    assert gray.shape == (140, 140)  # ceil(128 / 28) = 5
    assert decode_png(vlm.png_data_url(np.zeros((200, 300, 3)))).shape == (200, 300, 3)


def test_request_format_headers_and_answer(serve, monkeypatch):
    srv = serve((200, ok_body("  Hard ones are small.\n"), False))
    monkeypatch.setenv("TEST_VLM_KEY", "sekrit")
    cfg = vlm.VLMConfig(srv.endpoint + "/", "llava-test", api_key_env="TEST_VLM_KEY")
    images = [np.full((16, 16, 3), 0.5), np.full((32, 32, 1), -0.5)]
    assert vlm.ask(cfg, "What is shared?", images) == "Hard ones are small."

    (req,) = srv.requests
    assert req["method"] == "POST" and req["path"] == "/v1/chat/completions"
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["Authorization"] == "Bearer sekrit"
    body = json.loads(req["body"])
    assert body["model"] == "llava-test"
    assert body["max_tokens"] == 300 and body["temperature"] == 0.0
    (msg,) = body["messages"]
    assert msg["role"] == "user"
    text, *parts = msg["content"]
    assert text == {"type": "text", "text": "What is shared?"}
    assert [p["type"] for p in parts] == ["image_url", "image_url"]
    first, second = (decode_png(p["image_url"]["url"]) for p in parts)
    assert first.shape == (128, 128, 3) and np.all(first == 191)  # round(1.5 * 127.5)
    assert second.shape == (128, 128) and np.all(second == 64)


def test_no_key_env_means_no_authorization(serve):
    srv = serve((200, ok_body("fine"), False))
    assert vlm.ask(vlm.VLMConfig(srv.endpoint, "m"), "hi") == "fine"
    assert "Authorization" not in srv.requests[0]["headers"]
    assert json.loads(srv.requests[0]["body"])["messages"][0]["content"] == "hi"


def test_missing_key_env_is_clear(monkeypatch):
    monkeypatch.delenv("TEST_VLM_MISSING", raising=False)
    cfg = vlm.VLMConfig("http://127.0.0.1:9/v1", "m", api_key_env="TEST_VLM_MISSING")
    with pytest.raises(vlm.VLMError, match="TEST_VLM_MISSING.*not set"):
        vlm.ask(cfg, "hi")


def test_500_then_200_is_retried(serve):
    srv = serve((500, b"overloaded", False), (200, ok_body("second try"), False))
    assert vlm.ask(vlm.VLMConfig(srv.endpoint, "m", retries=1), "hi") == "second try"
    assert len(srv.requests) == 2


def test_500_twice_fails_after_retries(serve):
    srv = serve((500, b"overloaded", False), (503, b"still overloaded", False))
    with pytest.raises(vlm.VLMError, match="HTTP 503.*still overloaded.*2 attempts"):
        vlm.ask(vlm.VLMConfig(srv.endpoint, "m", retries=1), "hi")


def test_400_fails_at_once(serve):
    srv = serve((400, b'{"error": "image input not supported"}', False), (200, ok_body("x"), False))
    with pytest.raises(vlm.VLMError, match="HTTP 400.*image input not supported") as e:
        vlm.ask(vlm.VLMConfig(srv.endpoint, "m", retries=3), "hi")
    assert srv.endpoint in str(e.value)
    assert len(srv.requests) == 1


def test_timeout_is_retried_then_named(serve):
    srv = serve((200, ok_body("late"), True), (200, ok_body("late"), True))
    cfg = vlm.VLMConfig(srv.endpoint, "m", timeout_s=0.3, retries=1)
    with pytest.raises(vlm.VLMError, match=r"no answer within timeout_s=0.3 s.*timeout_s"):
        vlm.ask(cfg, "hi")
    assert len(srv.requests) == 2


@pytest.mark.parametrize(
    "body,match",
    [
        (b"<html>not json</html>", "not JSON"),
        (b'{"choices": []}', "choices\\[0\\].message.content"),
        (b'{"error": {"message": "x"}}', "choices\\[0\\].message.content"),
        (b'{"choices": [{"message": {"content": null}}]}', "content is NoneType"),
    ],
)
def test_malformed_body(serve, body, match):
    srv = serve((200, body, False))
    with pytest.raises(vlm.VLMError, match=match):
        vlm.ask(vlm.VLMConfig(srv.endpoint, "m"), "hi")


def test_closed_port_names_the_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(vlm.VLMError, match="could not connect") as e:
        vlm.ask(vlm.VLMConfig(endpoint, "m", retries=2), "hi")
    assert f"is the server running at {endpoint}?" in str(e.value)


def test_bad_config_names_the_flag():
    with pytest.raises(ValueError, match="config.report.vlm.endpoint"):
        vlm.VLMConfig("127.0.0.1:8000/v1", "m")


def test_explain_cluster_and_summary(serve):
    srv = serve((200, ok_body("They are tiny."), False), (200, ok_body("Misses tiny ones."), False))
    cfg = vlm.VLMConfig(srv.endpoint, "m")
    hard = [np.full((8, 8, 3), 1.0)] * 3
    ref = [np.full((8, 8, 3), -1.0)] * 2
    assert vlm.explain_cluster(cfg, "tabby cat", hard, ref) == "They are tiny."
    content = json.loads(srv.requests[0]["body"])["messages"][0]["content"]
    prompt = content[0]["text"]
    assert "first 3 images" in prompt and "last 2 images" in prompt and "'tabby cat'" in prompt
    urls = [p["image_url"]["url"] for p in content[1:]]
    assert [int(decode_png(u).mean()) for u in urls] == [255, 255, 255, 0, 0]

    assert vlm.summarize_blind_spots(cfg, "tabby cat", ["They are tiny.", "Dark."]) == (
        "Misses tiny ones."
    )
    summary_prompt = json.loads(srv.requests[1]["body"])["messages"][0]["content"]
    assert isinstance(summary_prompt, str)
    assert "1. They are tiny.\n2. Dark." in summary_prompt
    with pytest.raises(ValueError, match="reference_images"):
        vlm.explain_cluster(cfg, "tabby cat", hard, [])


def test_targeted_prompts_are_one_per_line_without_numbering(serve):
    answer = "1. a photo of a bag, seen from above\n\n- a bag in fog\nx"
    server = serve((200, ok_body(answer), False))
    config = vlm.VLMConfig(endpoint=server.endpoint, model="m")
    prompts = vlm.targeted_prompts(config, "Bag", "Bags seen from above.", count=2)
    assert prompts == ["a photo of a bag, seen from above", "a bag in fog"]
    body = json.loads(server.requests[0]["body"])
    assert "Bags seen from above." in body["messages"][0]["content"]
