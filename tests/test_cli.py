"""The command line: every bad option is a one-line message naming it (exit 2), every failure during
a run one line (exit 1, the traceback under --debug), and random argument vectors never crash it."""

import contextlib
import io
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtrl_fast import cli

BAD_OPTIONS = [
    # (arguments, the option the message must name, words it must contain)
    (["reproduce", "--noise", "0.7"], "--noise", "[0, 0.5)"),
    (["reproduce", "--noise", "nan"], "--noise", "finite"),
    (["reproduce", "--noise", "-0.1"], "--noise", "[0, 0.5)"),
    (["reproduce", "--lr", "inf"], "--lr", "finite"),
    (["reproduce", "--lr", "0"], "--lr", "positive"),
    (["reproduce", "--head-lr", "-1"], "--head-lr", "positive"),
    (["reproduce", "--weight-decay", "nan"], "--weight-decay", "finite"),
    (["reproduce", "--weight-decay", "-1"], "--weight-decay", "non-negative"),
    (["reproduce", "--base-seed", "-1"], "--base-seed", "non-negative"),
    (["reproduce", "--base-seed", "1.5"], "--base-seed", "integer"),
    (["reproduce", "--jobs", "0"], "--jobs", "at least 1"),
    (["reproduce", "--jobs", "-1"], "--jobs", "at least 1"),
    (["reproduce", "--threads", "0"], "--threads", "at least 1"),
    (["reproduce", "--threads", "100000"], "--threads", "at most"),
    (["reproduce", "--seeds", "0"], "--seeds", "at least 1"),
    (["reproduce", "--r", "0"], "--r", "at least 1"),
    (["reproduce", "--width", "-3"], "--width", "at least 1"),
    (["reproduce", "--rounds", "0"], "--rounds", "at least 1"),
    (["reproduce", "--head-steps", "0"], "--head-steps", "at least 1"),
    (["reproduce", "--samples-per-task", "0"], "--samples-per-task", "at least 1"),
    (["reproduce", "--downstream-tasks", "0"], "--downstream-tasks", "at least 1"),
    (["reproduce", "--d", "fifty"], "--d", "integer"),
    (["reproduce", "--d", "50,0"], "--d", "at least 1"),
    (["reproduce", "--d", ","], "--d", "none"),
    (["reproduce", "--tasks", "-5"], "--tasks", "at least 1"),
    (["reproduce", "--n-new", "1e3"], "--n-new", "integer"),
    (["reproduce", "--loss", "l1"], "--loss", "invalid choice"),
    (["reproduce", "--layout", "bogus"], "--layout", "invalid choice"),
    (["reproduce", "--sampler", "exact"], "--sampler", "invalid choice"),
    (["reproduce", "--studies", "recovery,contrastive"], "--studies", "unknown value 'contrastive'"),
    (["reproduce", "--widths", "0,8"], "--widths", "at least 1"),
    (["reproduce", "--out", ""], "--out", "empty"),
    (["reproduce", "--out", "{file}"], "--out", "is a file"),
    (["reproduce", "--out", "{file}/under"], "--out", "is a file"),
    (["reproduce", "--scheduler", "tcp://host:99999"], "--scheduler", "between 1 and 65535"),
    (["reproduce", "--scheduler", "tcp://host:0"], "--scheduler", "between 1 and 65535"),
    (["bench", "--layout", "bogus"], "--layout", "unknown value 'bogus'"),
    (["bench", "--backends", "mtrl_fast,tensorflow"], "--backends", "unknown value 'tensorflow'"),
    (["bench", "--dtype", "float16"], "--dtype", "unknown value 'float16'"),
    (["bench", "--gemm", "blis"], "--gemm", "gemm must be one of"),
    (["bench", "--dtype", ""], "--dtype", "none"),
    (["bench", "--repeat", "0"], "--repeat", "at least 1"),
    (["bench", "--cell", "400"], "--cell", "D,T such as 400,1000"),
    (["bench", "--cell", "0,10"], "--cell", "at least 1"),
    (["bench", "--threads", "-1"], "--threads", "at least 1"),
    (["bench", "--threads", "100000"], "--threads", "at most"),
    (["bench", "--shapes", "shared:1,2,3"], "--shapes", "LAYOUT:n,d,m,T"),
    (["bench", "--shapes", "shared:1,2,0,4"], "--shapes", "at least 1"),
    (["bench", "--d", "0"], "--d", "at least 1"),
    (["bench", "--out", "{file}"], "--out", "is a file"),
    (["step", "--repeat", "0"], "--repeat", "at least 1"),
    (["step", "--reference-repeat", "0"], "--reference-repeat", "at least 1"),
    (["step", "--n", "0"], "--n", "at least 1"),
    (["step", "--T", "-2"], "--T", "at least 1"),
    (["step", "--dtype", "float16"], "--dtype", "invalid choice"),
]


@pytest.mark.parametrize("argv, option, words", BAD_OPTIONS, ids=[" ".join(case[0]) for case in BAD_OPTIONS])
def test_a_bad_option_is_one_line_naming_it_with_exit_2(argv, option, words, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    argv = [arg.replace("{file}", str(a_file)) for arg in argv]
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"mtrl-fast {argv[0]}: error: argument {option}")
    assert words in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_the_sampler_and_study_names_are_the_papers():
    from mtrl_fast.paper.samplers import SAMPLERS, choices
    from mtrl_fast.paper.studies import STUDIES, parameters_of

    actions = cli.build_parser()._subparsers._group_actions[0].choices["reproduce"]._actions
    sampler = next(action for action in actions if action.dest == "pretrain.sampler")
    assert tuple(sampler.choices) == choices() and all(f"{name}: " in sampler.help for name in SAMPLERS)
    reproduce = next(action for action in actions if action.dest == "studies")
    assert all(name in reproduce.help for name in STUDIES)
    flags = {option for action in cli.build_parser()._actions for option in action.option_strings}
    parser_text = cli.build_parser()._subparsers._group_actions[0].choices["reproduce"].format_help()
    for parameter in parameters_of(STUDIES.values()):
        assert parameter.flag in parser_text, parameter.flag
    assert "--studies" not in flags  # a reproduce option, not a top-level one


@pytest.mark.parametrize(
    "argv, words",
    [
        (["reproduce", "--d", "99999999"], "needs about"),
        (["reproduce", "--d", "3", "--r", "5"], "every d must be at least r"),
        (["reproduce", "--layout", "shared", "--sampler", "reduced"], "needs layout 'per-task'"),
        (["reproduce", "--studies", "width", "--widths", "2,8"], "every value of widths must be at least r"),
        (["step", "--n", "100000", "--d", "100000"], "needs about"),
    ],
)
def test_options_that_do_not_fit_together_or_in_memory_exit_2_before_any_work(argv, words, tmp_path, capsys):
    assert cli.main(argv + ["--out", str(tmp_path / "out")] if argv[0] == "reproduce" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and err[0].startswith(f"mtrl-fast {argv[0]}: error:")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_failure_during_a_run_is_one_line_and_exit_1_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    from mtrl_fast.paper import experiments

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "results.json"))

    monkeypatch.setattr(experiments, "reproduce", full_disk)
    argv = ["reproduce", "--quick", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"mtrl-fast reproduce: error: No space left on device ({tmp_path / 'results.json'}) "
        "(run with --debug for the traceback)"
    ]
    with pytest.raises(OSError):
        cli.main(argv + ["--debug"])
    monkeypatch.setenv("MTRL_FAST_DEBUG", "1")
    with pytest.raises(OSError):
        cli.main(argv)


_WORDS = [
    "reproduce",
    "bench",
    "step",
    "info",
    "--quick",
    "--d",
    "--tasks",
    "--noise",
    "--lr",
    "--jobs",
    "--threads",
    "--out",
    "--repeat",
    "--layout",
    "--dtype",
    "--backends",
    "--gemm",
    "--shapes",
    "--seeds",
    "--loss",
    "--base-seed",
    "--weight-decay",
    "--n",
    "--T",
    "--help",
    "-h",
    "--debug",
    "0",
    "-1",
    "1",
    "2",
    "0.7",
    "nan",
    "inf",
    "-inf",
    "1e9",
    "50,100",
    ",",
    "",
    "shared",
    "per-task",
    "float16",
    "float32",
    "shared:1,2,3,4",
    "bogus",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_WORDS), st.text(string.printable, max_size=8)), max_size=6))
def test_random_arguments_parse_or_fail_with_one_line(argv):
    """The parser alone (nothing runs): any argument vector either parses into checked values or
    ends in exit 2 with a one-line message (or exit 0 for --help); never a traceback."""
    parser = cli.build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(argv)
    except SystemExit as stop:
        assert stop.code in (0, 2)
        if stop.code == 2:
            assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
            assert ": error: " in err.getvalue()
        return
    for name in ("repeat", "jobs", "seeds", "n", "d", "T", "threads"):
        value = getattr(args, name, None)
        if isinstance(value, int):
            assert value >= 1
    noise = getattr(args, "noise", None)
    assert noise is None or 0 <= noise < 0.5
    out = getattr(args, "out", None)
    assert out is None or out.strip()


FIRST_COMPILATION = """
    from mtrl_fast import _kernels, cli
    from mtrl_fast._kernels._jit import FLOAT_TYPES
    cli._note_first_compilation()
    _kernels.per_task_backward_block.serial_kernel.compile(FLOAT_TYPES[0])  # the kernel it looks for, alone
    print(_kernels.compiled_before())
    cli._note_first_compilation()
"""


def test_the_first_compilation_is_announced_once(tmp_path):
    """With an empty Numba cache the command says why it is slow; once the kernels are on disk, not."""
    from helpers import run_python

    result = run_python(FIRST_COMPILATION, NUMBA_CACHE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]
    assert result.stderr.count("compiling the kernels the run uses (first run only") == 1


def test_reproduce_names_the_missing_paper_extra_whatever_study_options_it_is_given():
    """The study options come from the paper's registry; without the extra they are unknown, and the
    command still says which extra to install (not "unrecognized arguments")."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['scipy'] = None\n"
        "from mtrl_fast import cli\n"
        "sys.exit(cli.main(['reproduce', '--quick', '--widths', '4', '--mechanism-points', '9']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 2 and "pip install 'mtrl_fast[paper]'" in done.stderr, done.stderr
    assert "unrecognized" not in done.stderr


def test_the_other_commands_do_not_load_the_papers_modules():
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from mtrl_fast import cli\n"
        "cli.main(['step', '--n', '32', '--d', '4', '--m', '4', '--T', '2', '--repeat', '1'])\n"
        "assert not any(name.startswith('mtrl_fast.paper') for name in sys.modules), 'paper loaded'\n"
        # The command is what the parser reads, not a word anywhere: an output folder called reproduce.
        "assert cli._command_of(['--debug', 'bench', '--out', 'reproduce']) == 'bench'\n"
        "assert cli._command_of(['--debug', 'reproduce', '--quick']) == 'reproduce'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
