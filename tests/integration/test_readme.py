"""The documentation runs: every block marked ``<!-- runnable -->`` in README.md and
examples/README.md, verbatim, in order, as one shell session per file.

The one liberty taken: the ports. ``9092`` (the broker) and ``9108`` (the service) in the
blocks become free ports, and ``DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS`` / ``DRIFTLINE_HTTP_PORT``
carry them to the files the blocks use, so the test never collides with anything that
already listens here. The session runs in a fresh directory holding a copy of
``examples/``, with the test's Python first on ``PATH`` (``python``, ``driftline``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MARK = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w*)\s*$")


def runnable_blocks(markdown: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each fenced block right after a runnable mark."""
    lines, blocks, i = markdown.splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() == MARK:
            opening = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            assert opening, f"line {i + 1}: {MARK} must be followed by a fenced block"
            end = lines.index("```", i + 2)
            blocks.append((opening.group(1), "\n".join(lines[i + 2 : end])))
            i = end
        i += 1
    return blocks


def script(blocks: list[tuple[str, str]], broker_port: int, http_port: int) -> str:
    parts = [
        "set -eo pipefail",
        # background jobs (broker, service) stop with the session, whatever happens
        "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT",
    ]
    for n, (language, body) in enumerate(blocks):
        body = re.sub(r"\b9092\b", str(broker_port), body)
        body = re.sub(r"\b9108\b", str(http_port), body)
        parts.append(f"echo '>>> block {n + 1} ({language})'")
        if language in ("sh", "bash", "console"):
            parts.append(body)
        elif language == "python":
            parts.append(f"python - <<'DRIFTLINE_BLOCK_END'\n{body}\nDRIFTLINE_BLOCK_END")
        else:
            raise AssertionError(f"block {n + 1}: cannot run a {language!r} block")
    return "\n".join(parts) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_session(markdown: Path, workdir: Path, timeout: float = 300) -> str:
    blocks = runnable_blocks(markdown.read_text())
    assert blocks, f"{markdown.name}: no runnable block"
    shutil.copytree(ROOT / "examples", workdir / "examples")
    broker_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS=f"localhost:{broker_port}",
        DRIFTLINE_HTTP_PORT=str(http_port),
        PYTHONUNBUFFERED="1",
    )
    (workdir / "session.sh").write_text(script(blocks, broker_port, http_port))
    proc = subprocess.Popen(
        ["bash", "session.sh"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(
            f"{markdown.name}: still running after {timeout}s\n{out[-4000:]}"
        ) from exc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"{markdown.name}: exit {proc.returncode}\n{out[-6000:]}"
    return out


def gauges(output: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of the ``name`` lines the session printed."""
    found = {}
    for m in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", output, re.M):
        found[m.group(1)] = float(m.group(2))
    return found


def by(label: str, values: dict[str, float]) -> dict[str, float]:
    out = {}
    for labels, v in values.items():
        m = re.search(rf'{label}="([^"]*)"', labels)
        if m:
            out[m.group(1)] = v
    return out


def test_readme_runs_verbatim(tmp_path):
    out = run_session(ROOT / "README.md", tmp_path)
    assert (tmp_path / "driftline.yaml").exists()  # written by `driftline init`
    assert (tmp_path / "fraud.profile.json").exists()  # `driftline reference build`
    drifted = by("feature", gauges(out, "driftline_feature_drifted"))
    assert drifted.get("amount") == 1, out[-4000:]
    assert drifted.get("merchant_category") == 1, drifted
    assert drifted.get("channel") == 0, drifted
    realized = by("metric", gauges(out, "driftline_model_performance"))
    estimated = by("metric", gauges(out, "driftline_model_performance_estimated"))
    assert 0 < realized["accuracy"] < estimated["accuracy"], (realized, estimated)
    assert re.search(r"fraud: \d+ events .*window \d+ events", out), out[-3000:]  # summary


def test_examples_readme_runs_verbatim(tmp_path):
    out = run_session(ROOT / "examples" / "README.md", tmp_path)
    drifted = by("feature", gauges(out, "driftline_feature_drifted"))
    assert drifted.get("distance_km") == 1, out[-4000:]
    assert drifted.get("weather") == 1, drifted
    assert by("metric", gauges(out, "driftline_model_performance"))["mae"] > 0


def test_the_runnable_marks_are_found():
    """A mark that no longer precedes a block fails loudly; the README keeps its walkthrough."""
    readme = runnable_blocks((ROOT / "README.md").read_text())
    assert [lang for lang, _ in readme] == ["sh", "sh", "python"]
    assert "driftline init" in readme[0][1]
    assert "driftline run" in readme[0][1]
    with pytest.raises(AssertionError, match="must be followed"):
        runnable_blocks(f"text\n{MARK}\nnot a block\n")
