"""``rnnkit serve`` and ``rnnkit visualize`` on the command line: PNGs, the unit list, and one-line errors."""

import json
import socket
import sys

import pytest
from test_cli import assert_user_error, run  # tests/test_cli.py: the CLI in-process, and the one-line error check


def test_visualize_writes_a_png(tiny_run, tmp_path, capsys):
    out = tmp_path / "unit.png"
    code, _, err = run(capsys, "visualize", tiny_run, "--text", 'print("hi")\nx = (1, 2)', "--unit", 5,
                       "--state", "c", "--layer", 0, "--out", out)
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out) in err


def test_visualize_lists_units(tiny_run, capsys):
    code, out, err = run(capsys, "visualize", tiny_run, "--text", 'a = f("b", [c])\n' * 5, "--list-units")
    assert code == 0, err
    ranking = json.loads(out)
    assert set(ranking) == {"in_quotes", "in_brackets", "line_position", "vowel"}
    assert all(len(f["units"]) == 5 for f in ranking.values())


@pytest.mark.parametrize("argv, fragments", [
    (["--text", "abc"], ["--unit N"]),
    (["--text", "", "--unit", 1], ["empty"]),
    (["--text", "abc", "--unit", 32], ["unit must be in 0..31"]),
    (["--text", "abc", "--unit", 1, "--layer", 5], ["layer must be in 0..1"]),
    (["--text", "ab\x01", "--unit", 1], ["vocabulary"]),
    (["--text", "abc", "--unit", 1, "--out", "x.jpg"], [".png"]),
    (["--text", "abc", "--unit", 1, "--out", "/nonexistent/dir/x.png"], ["does not exist", "create it first"]),
    (["--text", "a" * 5001, "--unit", 1], ["at most 5000"]),
    (["--text", "abc", "--unit", 1, "--width", 0], ["--width"]),
    (["--text", "abc", "--unit", 1, "--state", "q"], ["--state"]),
])
def test_visualize_user_errors(tiny_run, capsys, argv, fragments):
    assert_user_error(*run(capsys, "visualize", tiny_run, *argv)[::2], *fragments)


def test_visualize_missing_run(tmp_path, capsys):
    code, _, err = run(capsys, "visualize", tmp_path / "nothing", "--text", "abc", "--unit", 1)
    assert_user_error(code, err)


def test_serve_without_the_web_extra(tiny_run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    code, _, err = run(capsys, "serve", tiny_run)
    assert_user_error(code, err, "pip install 'rnnkit[web]'", "uvicorn")


def test_serve_user_errors(tiny_run, tmp_path, capsys):
    assert_user_error(*run(capsys, "serve", tmp_path / "nothing")[::2])
    assert_user_error(*run(capsys, "serve", tiny_run, "--port", 70000)[::2], "--port")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_user_error(*run(capsys, "serve", tiny_run, "--port", port)[::2], f"127.0.0.1:{port}", "--port")
    assert_user_error(*run(capsys, "serve", tiny_run, "--host", "no.such.host.invalid")[::2], "--host")


def test_help_lists_the_web_verbs(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "serve" in out and "visualize" in out


def test_cli_imports_no_web_or_plotting_code():
    import subprocess

    probe = ("import sys, rnnkit.cli; rnnkit.cli.build_parser(); "
             "print(sorted(m for m in ('fastapi', 'uvicorn', 'matplotlib', 'rnnkit.web.app') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
