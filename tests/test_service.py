"""The service with real processes: stdio fronts started as an MCP client starts them
(Claude Desktop and VS Code side by side), the CLI, stale state, idle exit, who may
connect, and roots per client through the fronts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_support import write_photos
from mcp_transports import server_env
from mcp_types import ListRootsResult, Root, TextContent

from mmsearch.testing import tiny
from mmsearch_service.runtime import lock_is_held, runtime_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="Unix sockets")]

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("tiny-visual-bge")
    return Path(tiny.write_tiny_visual_bge(target) or target)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    a, b = (tmp_path / "desktop").resolve(), (tmp_path / "vscode").resolve()
    write_photos(a, ("astronaut", "chelsea"))
    write_photos(b, ("coffee", "rocket"))
    return a, b


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = (tmp_path / "data").resolve()
    yield data
    _stop(data)


def _variables(data_dir: Path, tiny_model: Path, **extra: str) -> dict[str, str]:
    return {
        "MMSEARCH_SERVICE": "on",
        "MMSEARCH_DATA_DIR": str(data_dir),
        "MMSEARCH_EMBED_MODEL": str(tiny_model),
        "MMSEARCH_DEVICE": "cpu",
        **extra,
    }


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mmsearch.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _status(data_dir: Path) -> dict | None:
    env = server_env(MMSEARCH_DATA_DIR=str(data_dir), MMSEARCH_SERVICE="on")
    done = _cli(env, "service", "status", "--json", timeout=30)
    answer = json.loads(done.stdout)
    return answer if answer["running"] else None


def _stop(data_dir: Path) -> None:
    env = server_env(MMSEARCH_DATA_DIR=str(data_dir), MMSEARCH_SERVICE="on")
    _cli(env, "service", "stop", timeout=60)


def _wait_gone(data_dir: Path, timeout: float) -> bool:
    """Poll the service lock (released by the kernel when the process ends)."""
    runtime = runtime_for(data_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not lock_is_held(runtime.service_lock):
            return True
        time.sleep(0.1)
    return False


def _front(env: dict[str, str], **kwargs) -> Client:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server"], env=env, cwd=str(REPO_ROOT)
    )
    return Client(params, **kwargs)


def _text(result) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_two_fronts_and_the_cli_share_one_service_with_their_own_roots(
    data_dir, folders, tiny_model
) -> None:
    desktop, vscode = folders
    base = _variables(data_dir, tiny_model)
    env_a = server_env(**base, MMSEARCH_ALLOWED_ROOTS=str(desktop))
    env_b = server_env(**base, MMSEARCH_ALLOWED_ROOTS=str(vscode))
    answers: dict[str, object] = {}

    async def desktop_client() -> None:
        async with _front(env_a) as client:
            answers["a_index"] = await client.call_tool("index_images", {"paths": [str(desktop)]})
            answers["a_other"] = await client.call_tool("index_images", {"paths": [str(vscode)]})
            answers["a_search"] = await client.call_tool("multimodal_search", {"text": "a cat"})
            answers["a_tools"] = {t.name for t in (await client.list_tools()).tools}

    async def vscode_client() -> None:
        async with _front(env_b, mode="legacy") as client:
            answers["b_index"] = await client.call_tool("index_images", {"paths": [str(vscode)]})
            answers["b_other"] = await client.call_tool("index_images", {"paths": [str(desktop)]})
            answers["b_stats"] = await client.call_tool("collection_stats", {})

    async def cli() -> None:
        done = await anyio.to_thread.run_sync(lambda: _cli(server_env(**base), "stats"))
        answers["cli"] = done

    with anyio.fail_after(240):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(desktop_client)
            tasks.start_soon(vscode_client)
            tasks.start_soon(cli)

    assert not answers["a_index"].is_error, _text(answers["a_index"])
    assert not answers["b_index"].is_error, _text(answers["b_index"])
    assert answers["a_index"].structured_content["indexed"] == 2
    assert answers["b_index"].structured_content["indexed"] == 2
    # each front's calls are bounded by its own MMSEARCH_ALLOWED_ROOTS only
    assert answers["a_other"].is_error and "outside the allowed roots" in _text(answers["a_other"])
    assert answers["b_other"].is_error and "outside the allowed roots" in _text(answers["b_other"])
    assert not answers["a_search"].is_error and answers["a_search"].structured_content["hits"]
    assert "index_images" in answers["a_tools"]
    cli_done = answers["cli"]
    assert cli_done.returncode in (0, 1), cli_done.stderr  # 1: before any index call landed
    assert "collection images" in cli_done.stdout or "does not exist" in cli_done.stderr

    done = _cli(server_env(**base), "stats")
    assert done.returncode == 0 and "4 images" in done.stdout, done.stderr
    status = _status(data_dir)
    assert status is not None and status["models_loaded"]["embedder"]
    log = (data_dir / "service.log").read_text()
    assert log.count("serving ") == 1, log  # one service ever started
    assert log.count("opening the image search") == 1, log  # the models loaded once
    pids = {line.split()[2] for line in log.splitlines() if " INFO " in line}
    assert pids == {str(status["pid"])}


@pytest.mark.anyio
async def test_client_roots_pass_through_the_front(data_dir, folders, tiny_model) -> None:
    desktop, vscode = folders
    env = server_env(**_variables(data_dir, tiny_model))  # no MMSEARCH_ALLOWED_ROOTS

    async def shares_desktop(_ctx) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=desktop.as_uri())])

    with anyio.fail_after(180):
        async with _front(env, list_roots_callback=shares_desktop) as client:
            allowed = await client.call_tool("index_images", {"paths": [str(desktop)]})
            refused = await client.call_tool("index_images", {"paths": [str(vscode)]})
            status = await anyio.to_thread.run_sync(_status, data_dir)
        async with _front(env) as client:  # shares nothing, configures nothing
            nothing = await client.call_tool("index_images", {"paths": [str(desktop)]})
    assert not allowed.is_error, _text(allowed)
    assert refused.is_error and "outside the allowed roots" in _text(refused)
    assert nothing.is_error and "no allowed roots" in _text(nothing)
    assert status is not None and status["models_loaded"]["embedder"]
    assert [c["kind"] for c in status["clients"]] == ["stdio"]  # the front, seen as a client


def test_racing_fronts_start_exactly_one_service(data_dir, tiny_model) -> None:
    env = server_env(**_variables(data_dir, tiny_model))
    command = [sys.executable, "-m", "mmsearch.cli", "stats"]
    procs = [
        subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for proc in procs:
        proc.wait(timeout=120)
    log = (data_dir / "service.log").read_text()
    assert log.count("serving ") == 1, log
    assert all("does not exist" not in (p.stdout or "") for p in procs)


def test_stale_pidfile_and_socket_are_replaced(data_dir, tiny_model) -> None:
    runtime = runtime_for(data_dir)
    # a socket file left by a dead process, and a pidfile naming a dead pid
    orphan = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    orphan.bind(os.fspath(runtime.socket))
    orphan.close()
    runtime.pidfile.write_text(json.dumps({"pid": 999_999_999, "started": 0}))
    assert runtime.socket.exists()

    env = server_env(**_variables(data_dir, tiny_model))
    done = _cli(env, "search", "--text", "anything")
    assert done.returncode in (0, 1), done.stderr
    status = _status(data_dir)
    assert status is not None and status["pid"] != 999_999_999
    assert json.loads(runtime.pidfile.read_text())["pid"] == status["pid"]


def test_idle_service_exits_by_itself(data_dir, tiny_model) -> None:
    env = server_env(**_variables(data_dir, tiny_model, MMSEARCH_SERVICE_IDLE_S="1"))
    done = _cli(env, "stats")
    assert "does not exist" in done.stderr or done.returncode == 0
    assert _wait_gone(data_dir, timeout=30)
    runtime = runtime_for(data_dir)
    assert not runtime.socket.exists() and not runtime.pidfile.exists()


def test_cli_through_the_service_does_not_import_torch(data_dir, folders, tiny_model) -> None:
    desktop, _ = folders
    env = server_env(**_variables(data_dir, tiny_model))
    assert _cli(env, "index", str(desktop)).returncode == 0
    probe = (
        "import sys\n"
        "from mmsearch.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as e:\n"
        "    print('CODE', e.code)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'timm', 'pymilvus'))\n"
        "print('HEAVY', heavy)\n"
    )
    commands = (
        ["stats"],
        ["search", "--text", "a cat", "--top-k", "1"],
        ["remove", str(desktop / "chelsea.jpg")],
    )
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-c", probe, *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "CODE 0" in done.stdout, done.stdout + done.stderr
        assert "HEAVY []" in done.stdout, done.stdout
    assert "removed 1" in done.stdout
    # and in-process (the control): the same probe sees the store's client loaded
    done = subprocess.run(
        [sys.executable, "-c", probe, "--no-service", "stats"],
        env=server_env(**_variables(data_dir.parent / "other", tiny_model)),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "HEAVY ['pymilvus'" in done.stdout, done.stdout + done.stderr


def test_runtime_files_are_private(data_dir, tiny_model) -> None:
    env = server_env(**_variables(data_dir, tiny_model))
    _cli(env, "stats")
    runtime = runtime_for(data_dir)
    assert runtime.directory.stat().st_mode & 0o777 == 0o700
    assert runtime.socket.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to switch users"
)
def test_another_user_cannot_reach_the_service(data_dir, tiny_model) -> None:
    env = server_env(**_variables(data_dir, tiny_model))
    _cli(env, "stats")
    runtime = runtime_for(data_dir)
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(10)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        '    s.sendall(b\'{"mmsearch": 1, "control": "status"}\\n\')\n'
        "    print('ANSWER', s.recv(65536))\n"
        "except OSError as e:\n"
        "    print('REFUSED', type(e).__name__)\n"
    )
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    command = [*as_nobody, sys.executable, "-c", probe, str(runtime.socket)]
    run_as_nobody = dict(capture_output=True, text=True, timeout=30, cwd="/")
    # the data directory's parents must be passable for the test to mean anything
    for parent in runtime.directory.parents:
        if parent.stat().st_mode & 0o001 == 0:
            os.chmod(parent, parent.stat().st_mode | 0o001)
    done = subprocess.run(command, **run_as_nobody)
    assert "REFUSED PermissionError" in done.stdout, done.stdout + done.stderr

    # even with the directory and socket opened up, the peer's uid is checked
    os.chmod(runtime.directory, 0o755)
    os.chmod(runtime.socket, 0o777)
    try:
        done = subprocess.run(command, **run_as_nobody)
    finally:
        os.chmod(runtime.directory, 0o700)
        os.chmod(runtime.socket, 0o600)
    # connected, then dropped unanswered (EOF, or a broken pipe when the drop came first)
    assert any(
        sign in done.stdout for sign in ("ANSWER b''", "BrokenPipeError", "ConnectionResetError")
    ), done.stdout + done.stderr
    assert "refused a connection from uid 65534" in (data_dir / "service.log").read_text()


def test_a_front_with_other_store_settings_is_refused(data_dir, tiny_model, tmp_path) -> None:
    env = server_env(**_variables(data_dir, tiny_model))
    assert _cli(env, "service", "start").returncode == 0
    other = {**env, "MMSEARCH_EMBED_MODEL": str(tmp_path / "another-model")}
    done = _cli(other, "stats")
    assert done.returncode == 1
    assert "refused the connection" in done.stderr and "another-model" in done.stderr
    status = _status(data_dir)
    assert status is not None and not status["models_loaded"]["embedder"]


def test_cli_index_follows_its_job_on_the_service_then_searches_more_like_it(
    data_dir, folders, tiny_model
) -> None:
    desktop, _ = folders
    env = server_env(**_variables(data_dir, tiny_model))
    done = _cli(env, "index", str(desktop), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["indexed"] == 2

    status = _status(data_dir)
    assert status is not None
    assert [job["state"] for job in status["jobs"]] == ["finished"]

    # --similar-to PATH names the stored image by its content; the image leaves its hits
    photo = desktop / "astronaut.jpg"
    done = _cli(env, "search", "--similar-to", str(photo), "--json")
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert [Path(h["path"]).name for h in hits] == ["chelsea.jpg"]


def test_cli_index_detach_leaves_the_job_to_the_service(data_dir, folders, tiny_model) -> None:
    _, vscode = folders
    env = server_env(**_variables(data_dir, tiny_model))
    done = _cli(env, "index", str(vscode), "--detach")
    assert done.returncode == 0, done.stderr
    assert "index job" in done.stdout
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = _status(data_dir)
        assert status is not None
        if status["jobs"] and status["jobs"][0]["state"] == "finished":
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the detached job did not finish: {status}")
    done = _cli(env, "stats", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] == 2


def test_cli_index_with_prune_ext_and_globs_runs_on_the_service(
    data_dir, folders, tiny_model
) -> None:
    desktop, vscode = folders
    env = server_env(**_variables(data_dir, tiny_model))

    def index(*args: str) -> dict:
        done = _cli(env, "index", *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert index(str(desktop))["indexed"] == 2
    (desktop / "chelsea.jpg").unlink()
    assert index("--prune", str(desktop))["removed"] == 1

    from PIL import Image

    Image.open(vscode / "coffee.jpg").save(vscode / "coffee.png")
    only_png = index("--ext", "png", str(vscode))
    assert (only_png["indexed"], only_png["total"]) == (1, 1)

    globbed = index(str(vscode / "r*.jpg"))  # expanded here, sent as files
    assert (globbed["indexed"], globbed["total"]) == (1, 1)
    (vscode / "rocket.jpg").unlink()
    pruned = index("--prune", str(vscode / "r*.jpg"))
    assert pruned["removed"] == 1
    nothing = index(str(vscode / "none*.jpg"))
    assert (nothing["indexed"], nothing["total"]) == (0, 0)

    status = _status(data_dir)
    assert status is not None  # every job ran on the service, none in this process
    assert len(status["jobs"]) >= 6  # one per command (a follow call may add one)
    assert {job["state"] for job in status["jobs"]} == {"finished"}
    done = _cli(env, "stats", "--json")
    assert json.loads(done.stdout)["count"] == 2  # astronaut.jpg, coffee.png
