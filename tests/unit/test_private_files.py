"""What the operator commands write that holds secrets is private: the pulumi state (the file
backend writes it 0644) and the README's outputs example."""
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def recipe_lines() -> list[str]:
    text = (REPO / "Makefile").read_text()
    return [line.strip() for line in text.splitlines() if line.startswith("\t")]


RUNS_PULUMI = [l for l in recipe_lines() if re.search(r"\$\(PULUMI(_STACK)?\) ", l)]


def test_private_state_makes_the_state_files_0600_and_keeps_the_exit_code():
    text = (REPO / "Makefile").read_text()
    assert re.search(r"^PRIVATE_STATE = rc=\$\$\?; chmod -R go= \$\(STATE_DIR\) 2>/dev/null; "
                     r"exit \$\$rc$", text, re.M)
    assert re.search(r"^STATE_DIR := \.pulumi-state$", text, re.M)


@pytest.mark.parametrize("line", RUNS_PULUMI)
def test_recipe_running_pulumi_leaves_the_state_private(line):
    assert line.endswith("; $(PRIVATE_STATE)"), line


def test_the_stack_target_makes_existing_state_files_private_first():
    assert any(l.startswith("@mkdir -p $(STATE_DIR) && chmod -R go= $(STATE_DIR)")
               for l in recipe_lines())


def test_readme_writes_the_outputs_to_a_0600_file():
    lines = [l for l in (REPO / "README.md").read_text().splitlines() if "make -s outputs >" in l]
    assert lines and all(re.match(r"install -m 600 /dev/null (\S+) && make -s outputs > \1$", l)
                         for l in lines), lines
