"""What the operator commands write that holds secrets is private: the pulumi state (file
backend: 0644 by default) and the README's outputs example."""
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def recipe_lines() -> list[str]:
    text = (REPO / "Makefile").read_text()
    return [line.strip() for line in text.splitlines() if line.startswith("\t")]


RUNS_PULUMI = [l for l in recipe_lines() if re.search(r"\$\(PULUMI(_STACK)?\)|-m ops\.", l)]


def test_the_private_umask_is_077():
    assert re.search(r"^PRIVATE := umask 077;$", (REPO / "Makefile").read_text(), re.M)


@pytest.mark.parametrize("line", RUNS_PULUMI)
def test_recipe_running_pulumi_starts_under_the_private_umask(line):
    assert line.lstrip("@").startswith("$(PRIVATE) "), line


def test_the_stack_target_makes_existing_state_files_private():
    assert any("chmod -R go= .pulumi-state" in l for l in recipe_lines())


def test_readme_writes_the_outputs_to_a_0600_file():
    lines = [l for l in (REPO / "README.md").read_text().splitlines() if "make -s outputs >" in l]
    assert lines and all(re.match(r"install -m 600 /dev/null (\S+) && make -s outputs > \1$", l)
                         for l in lines), lines
