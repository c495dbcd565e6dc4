"""The README's install commands: the default one and the CPU-only one beside it."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _bash_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    return [line for block in blocks for line in block.splitlines()]


def test_the_cpu_only_install_is_one_command_with_the_cpu_index() -> None:
    cpu = [line for line in _bash_lines() if "download.pytorch.org/whl/cpu" in line]
    assert len(cpu) == 1, "one CPU-only install command"
    command = cpu[0]
    # torch and torchvision both from the CPU index, before the package (which keeps them)
    assert re.search(r"pip install torch torchvision --index-url \S+/whl/cpu &&", command)
    assert command.index("whl/cpu") < command.index("pip install -e .")


def test_the_cpu_only_install_says_its_size_and_when_to_choose_it() -> None:
    section = README.split("### Without an NVIDIA GPU", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"\d(\.\d)? GB", section)
    assert "Choose" in section
