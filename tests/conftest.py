"""Shared fixtures: locally built tokenizers and models, real servers on loopback, a CLI runner."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from distilqa.squad import DEFAULT_DEV_SET, load_squad

TESTS = Path(__file__).parent
CONFORMANCE = TESTS / "data" / "conformance"
DISTILQA = str(Path(sys.executable).parent / "distilqa")


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    """Run the installed `distilqa` command as a user would."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([DISTILQA, *args], capture_output=True, text=True, env=full_env, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_clean_failure(result: CliResult, *fragments: str) -> None:
    """Exit status 2, a message naming the problem, no traceback, nothing on stdout."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def dev_set():
    return load_squad(DEFAULT_DEV_SET)


@pytest.fixture(scope="session")
def contexts(dev_set) -> list[str]:
    return list(dict.fromkeys(p.context for _, p, _ in dev_set.iter_questions()))


@pytest.fixture(scope="session")
def bpe_tokenizer_dir(tmp_path_factory, contexts) -> Path:
    from distilqa.local_models import train_tokenizer

    return train_tokenizer(contexts[:400], tmp_path_factory.mktemp("tok-bpe"), "bpe", vocab_size=3000)


@pytest.fixture(scope="session")
def wordpiece_tokenizer_dir(tmp_path_factory, contexts) -> Path:
    from distilqa.local_models import train_tokenizer

    return train_tokenizer(contexts[:400], tmp_path_factory.mktemp("tok-wp"), "wordpiece", vocab_size=3000)


@pytest.fixture(scope="session")
def bpe_tokenizer(bpe_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bpe_tokenizer_dir)


@pytest.fixture(scope="session")
def wordpiece_tokenizer(wordpiece_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(wordpiece_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory, bpe_tokenizer_dir) -> Path:
    from distilqa.local_models import random_qa_model

    return random_qa_model(bpe_tokenizer_dir, tmp_path_factory.mktemp("tiny-roberta"), num_layers=2, hidden_size=64)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, wordpiece_tokenizer_dir) -> Path:
    from distilqa.local_models import random_qa_model

    return random_qa_model(wordpiece_tokenizer_dir, tmp_path_factory.mktemp("tiny-bert"), num_layers=2, hidden_size=64)


@pytest.fixture(scope="session")
def dev_slice_file(tmp_path_factory, dev_set) -> Path:
    """The first 3 articles' first 4 paragraphs: answerable and unanswerable questions, short and long contexts."""
    from distilqa.squad import Article, SquadDataset, write_squad

    articles = [Article(a.title, a.paragraphs[:4]) for a in dev_set.articles[:3]]
    path = tmp_path_factory.mktemp("slice") / "dev-slice.json"
    write_squad(SquadDataset(articles), path)
    return path


# ------------------------------------------------------------------------------- real servers


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A real S3 API (moto server) on loopback; yields the environment a client needs."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(scope="session")
def https_server(tmp_path_factory) -> Iterator[tuple[str, Path, Path]]:
    """A real HTTPS server on loopback with a self-signed certificate.

    Yields (base URL, directory it serves, CA bundle to trust via SSL_CERT_FILE).
    """
    root = tmp_path_factory.mktemp("https-root")
    certs = tmp_path_factory.mktemp("https-certs")
    cert, key = _self_signed_cert(certs)
    port = free_port()
    server_code = (
        "import http.server, ssl, functools, sys\n"
        "handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n"
        "httpd = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[2])), handler)\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[3], sys.argv[4])\n"
        "httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)\n"
        "httpd.serve_forever()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", server_code, str(root), str(port), str(cert), str(key)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"https://localhost:{port}", root, cert
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _self_signed_cert(directory: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def copy_conformance(name: str, dest: Path) -> dict[str, Path]:
    out = {}
    for kind in ("predictions", "na_prob", "expected", "expected_with_na_prob"):
        src = CONFORMANCE / f"{name}.{kind}.json"
        out[kind] = Path(shutil.copy(src, dest / src.name))
    return out


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_shard(path: Path, documents: list[str]) -> Path:
    """A corpus shard holding `documents` in the format its suffix names (.txt/.txt.gz/.jsonl/.jsonl.zst)."""
    import gzip

    if ".jsonl" in path.name:
        raw = "".join(json.dumps({"text": d, "meta": {"i": i}}) + "\n" for i, d in enumerate(documents)).encode()
    else:
        raw = "".join(d + "\n" for d in documents).encode()
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw)
    elif path.name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdCompressor().compress(raw)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path
