"""The offline tools answer under their old top-level names and under `offline <tool>` (issue #13):
both go through offline/tools.py to the same function."""
from __future__ import annotations

import importlib

import pytest

from squeeze_perception import cli
from squeeze_perception.offline import cli as offline_cli
from squeeze_perception.offline.tools import TOOLS

OLD_COMMANDS = ("det", "seg", "synth", "track", "bench", "soak", "kitti2bag", "render")


def test_every_offline_tool_keeps_its_top_level_command():
    assert set(OLD_COMMANDS) <= set(TOOLS)
    for name in TOOLS:
        assert cli.COMMANDS[name] == TOOLS[name]
        assert TOOLS[name][0].startswith("squeeze_perception.offline.")


@pytest.mark.parametrize("name", ["det", "track", "kitti2bag"])
def test_offline_prefix_reaches_the_same_function(name, monkeypatch):
    module, _, func = TOOLS[name][0].partition(":")
    calls = []
    monkeypatch.setattr(importlib.import_module(module), func, lambda argv: calls.append(argv) or 3)
    assert cli.main([name, "a", "--b"]) == 3
    assert cli.main(["offline", name, "a", "--b"]) == 3
    assert offline_cli.main([name, "a", "--b"]) == 3
    assert calls == [["a", "--b"]] * 3


def _run(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse's --help
        return exc.code


@pytest.mark.parametrize("name", OLD_COMMANDS)
def test_each_tool_answers_help_alike_under_both_spellings(name, capsys):
    code = _run([name, "--help"])
    text = capsys.readouterr()
    assert "usage:" in text.out + text.err
    assert _run(["offline", name, "--help"]) == code
    assert capsys.readouterr() == text


def test_offline_search_commands_still_answer():
    assert offline_cli.main([]) == 0
    assert offline_cli.main(["no-such-command"]) == 2
