"""A setting of the reproduction is declared once, on its field: the command's flag and help, the
grid and the cells' fingerprints follow."""

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from mtrl_fast.paper import grid as grid_module
from mtrl_fast.paper.options import Option, differences, from_parsed, options_of

# A new training setting, declared on its field alone, before the grid is built from the config.
NEW_SETTING = """
import json
from dataclasses import dataclass
from mtrl_fast.paper import train
from mtrl_fast.paper.options import setting

@dataclass(frozen=True)
class WithMomentum(train.PretrainConfig):
    momentum: float = setting(0.0, "nonnegative_float", "heavy-ball momentum of the first layer")

train.PretrainConfig = WithMomentum
from mtrl_fast import cli
from mtrl_fast.paper import grid
from mtrl_fast.paper.options import from_parsed

parser = cli.build_parser()
reproduce = parser._subparsers._group_actions[0].choices["reproduce"]
args = parser.parse_args(["reproduce", "--momentum", "0.5", "--width", "64"])
chosen = from_parsed(grid.Grid(), args)
cell = grid.plan(chosen)[0]
print(json.dumps({
    "help": " ".join(reproduce.format_help().split()),
    "momentum": chosen.pretrain.momentum,
    "width": chosen.pretrain.width,
    "recorded": grid.settings_of(cell, chosen)["pretrain"]["momentum"],
    "fingerprints": [grid.fingerprint(cell, chosen), grid.fingerprint(cell, from_parsed(grid.Grid(), parser.parse_args(["reproduce", "--width", "64"])))],
}))
"""


def test_a_setting_declared_on_its_field_is_an_option_a_grid_value_and_part_of_the_fingerprint():
    import json

    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NEW_SETTING)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert "--momentum MOMENTUM heavy-ball momentum of the first layer (default 0.0)" in seen["help"]
    assert seen["momentum"] == seen["recorded"] == 0.5 and seen["width"] == 64
    assert seen["fingerprints"][0] != seen["fingerprints"][1]  # records depend on it


def test_every_setting_of_the_grid_has_one_flag_and_the_quick_grid_is_described_from_itself():
    declared = list(options_of(grid_module.Grid()))
    flags = [d.flag for d in declared]
    assert len(flags) == len(set(flags))
    assert {"--d", "--tasks", "--width", "--labels", "--sampler", "--studies", "--n-new"} <= set(flags)
    changed = dict(differences(grid_module.QUICK, grid_module.Grid()))
    assert changed["--d"] == grid_module.QUICK.d and "--width" not in changed


def test_parsed_options_change_only_what_was_given_and_bad_values_are_the_grids_errors():
    given = SimpleNamespace(**{"d": (40,), "pretrain.width": 32, "pretrain.loss": None})
    chosen = from_parsed(grid_module.Grid(), given)
    assert chosen.d == (40,) and chosen.pretrain.width == 32
    assert chosen.pretrain.loss == grid_module.Grid().pretrain.loss and chosen.tasks == grid_module.Grid().tasks
    with pytest.raises(ValueError, match="width must be at least r"):
        from_parsed(grid_module.Grid(), SimpleNamespace(**{"pretrain.width": 2}))


def test_an_option_states_how_it_is_read():
    with pytest.raises(ValueError, match="kind must be one of"):
        Option("float", "a number")
    with pytest.raises(ValueError, match="choices are given"):
        Option("choice", "one of them")
    assert Option("positive_int", "neurons m").describe(256) == "neurons m (default 256)"
    assert (
        Option("positive_int", "n", default_text="5 d", note="study: x").describe(None) == "n (default 5 d; study: x)"
    )
