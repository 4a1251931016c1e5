"""The command line's spelling, errors and help, through the real entry point (`main(argv)`, one subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlbridge.cli.main import build_parser, main
from vlbridge.errors import UserError

PARSER = build_parser()
SRC = str(Path(__file__).resolve().parents[1] / "src")


def commands(parser=PARSER, path=()):
    """(path, parser) of every command and subcommand, e.g. (("lavit", "tokenizer"), <parser>)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


LEAVES = [(path, p) for path, p in commands() if path and not any(isinstance(a.choices, dict) for a in p._actions)]
CANDIDATES = ("2", "0.5", "true", "{}", "[]", "none", "x")


def parses(parser, argv):
    try:
        return parser.parse_args(argv)
    except SystemExit:
        return None


def a_value(parser, action, required):
    """A value the option accepts (its first choice, else the first candidate that parses)."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [str(next(iter(action.choices)))]
    flag = action.option_strings[0]
    return next([v] for v in CANDIDATES if parses(parser, required + [flag, v]) is not None)


def required_args(parser):
    args = []
    for action in parser._actions:
        if action.required and action.option_strings:
            args += [action.option_strings[0], "x"]
    return args


def error_of(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


# ---- one spelling, two ways to type it ------------------------------------------------------------------
@pytest.mark.parametrize("path, parser", LEAVES, ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_kebab_and_snake_spellings_parse_alike(path, parser, capsys):
    required = required_args(parser)
    checked = 0
    for action in parser._actions:
        twins = getattr(action, "twins", ())
        if not twins:
            continue
        value = a_value(parser, action, required)
        canonical = parser.parse_args(required + [action.option_strings[0], *value])
        for twin in twins:
            assert twin.replace("_", "-") in action.option_strings       # the twin of a listed spelling
            assert vars(parser.parse_args(required + [twin, *value])) == vars(canonical), twin
        checked += 1
    capsys.readouterr()
    assert checked or not any(a.option_strings for a in parser._actions if "_" in "".join(a.option_strings))


def test_help_lists_kebab_spellings_only(capsys):
    for path, parser in commands():
        listed = parser.format_help()
        for action in parser._actions:
            for twin in getattr(action, "twins", ()):
                assert f"{twin} " not in listed and f"{twin}," not in listed, (path, twin)


def test_both_spellings_give_the_same_resolved_config(capsys):
    def config(*flags):
        assert main(["train", "--print-config", *flags]) == 0
        return json.loads(capsys.readouterr().out)
    kebab = config("--train.batch-size", "4", "--model.vision.name-or-path", "enc", "--train.train-vision", "false",
                   "--data.image-folder", "imgs", "--model.llm.max-length", "128")
    snake = config("--train.batch_size", "4", "--model.vision.name_or_path", "enc", "--train.train_vision", "false",
                   "--data.image_folder", "imgs", "--model.llm.max_length", "128")
    short = config("--batch-size", "4", "--vision", "enc", "--train.train-vision", "false", "--image-folder", "imgs",
                   "--model.llm.max-length", "128")
    assert kebab == snake == short
    assert kebab["train"]["batch_size"] == 4 and kebab["model"]["vision"]["name_or_path"] == "enc"
    assert kebab["data"]["image_folder"] == "imgs" and kebab["model"]["llm"]["max_length"] == 128


def test_one_flag_per_concept_across_commands():
    """The same concept has the same flag in every command that takes it."""
    def flags(path):
        parser = dict(commands())[path]
        return {s for a in parser._actions for s in a.option_strings}
    for path in [("train",), ("eval",), ("pretrain-vision",), ("arena",), ("lavit", "tokenizer")]:
        assert "--batch-size" in flags(path), path
    for path in [("eval",), ("chat",), ("arena",)]:
        assert "--max-new-tokens" in flags(path), path
    for path in [("train",), ("eval",)]:
        assert {"--image-folder", "--on-bad-record", "--data.image-folder"} <= flags(path), path
    for path in [("data", "shapes"), ("arena",)]:
        assert {"--max-objects", "--image-size", "--object-size"} <= flags(path), path
    for path in [("arena",), ("connectors",)]:
        assert "--connector-options" in flags(path), path
    for path in [("train",), ("arena",), ("lavit", "tokenizer"), ("connectors",)]:
        assert "--vision" in flags(path), path
    assert "--model.vision.image-size" in flags(("pretrain-vision",)) and "--vision.image-size" not in flags(
        ("pretrain-vision",))
    for path, parser in LEAVES:
        out = flags(path)
        if "--out" in out and path not in {("viz", "answers"), ("viz", "windows"), ("generate-image",)}:
            assert "--output-dir" in out, path          # --out is a folder there


def test_arena_shapes_flags_are_those_of_data_shapes(capsys):
    def config(*flags):
        assert main(["arena", "--print-config", *flags]) == 0
        return json.loads(capsys.readouterr().out)["shapes"]
    assert config("--max-objects", "5") == config("--shapes.max_objects", "5") == config("--shapes.max-objects", "5")
    assert config("--max-objects", "5")["max_objects"] == 5


# ---- errors -----------------------------------------------------------------------------------------------
def test_abbreviations_are_refused_with_a_suggestion(capsys):
    err = error_of(["train", "--train.ste", "7", "--print-config"], capsys)
    assert err.splitlines() == ["vlbridge train: error: unknown option --train.ste (did you mean --train.steps?)",
                                "see: vlbridge train --help"]


def test_unknown_option_names_the_subcommand(capsys):
    err = error_of(["eval", "--data", "x.json", "--max-new-token", "3"], capsys)
    assert err.startswith("vlbridge eval: error: unknown option --max-new-token (did you mean --max-new-tokens?)")
    err = error_of(["lavit", "tokenizer", "--annotations", "a", "--vision", "v", "--out", "o", "--stepz", "3"], capsys)
    assert err.startswith("vlbridge lavit tokenizer: error: unknown option --stepz")


def test_bad_choice_suggests_the_closest(capsys):
    err = error_of(["train", "--preset", "tiny", "--print-config"], capsys)
    assert "invalid choice 'tiny' (did you mean 'tiny-cpu'?)" in err and len(err.splitlines()) == 2
    assert main(["train", "--stage", "aling"]) == 2                # stages are the connector's: checked at run
    err = capsys.readouterr().err
    assert err.startswith("vlbridge train: error: connector 'pixel_shuffle' has no stage 'aling' (did you mean 'align'?)")
    err = error_of(["trian"], capsys)
    assert "did you mean 'train'?" in err


def test_bad_json_shows_the_json_parser_message(capsys):
    err = error_of(["train", "--model.connector.options", "{depth: 2}"], capsys)
    assert "argument --model.connector.options: invalid JSON '{depth: 2}': Expecting property name" in err
    err = error_of(["connectors", "--connector-options", "[1]"], capsys)
    assert "expected a JSON object" in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--batch-size", "0", "--print-config"], "train.batch_size: must be >= 1, got 0"),
    (["train", "--train.betas", "0.9", "--print-config"], "train.betas: expected two values in [0, 1)"),
    (["train", "--train.betas", "0.9,1.5", "--print-config"], "train.betas"),
    (["train", "--train.log-every", "0", "--print-config"], "train.log_every: must be >= 1"),
    (["train", "--model.connector.options", '{"factr": 2}', "--print-config"], "did you mean 'factor'?"),
    (["arena", "--batch-size", "0", "--print-config"], "batch_size: must be >= 1"),
    (["arena", "--max-objects", "0", "--print-config"], "shapes: need 1 <= min_objects"),
    (["data", "shapes", "--out", "x", "--format-hint", "none", "--print-config"], "format_hint"),
])
def test_bad_values_are_one_line_before_anything_runs(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err and "Traceback" not in captured.err
    assert captured.err.startswith(f"vlbridge {' '.join(a for a in argv[:2] if not a.startswith('-'))}: error: ")


@pytest.mark.parametrize("argv", [["eval", "--data", "t.json", "--batch-size", "0"],
                                  ["chat", "--model", "m", "--max-new-tokens", "-1"],
                                  ["generate-image", "--model", "m", "--prompt", "p", "--out", "o", "--n", "0"]])
def test_bad_numbers_of_plain_flags_are_parse_errors(argv, capsys):
    assert "must be >= 1" in error_of(argv, capsys)


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys):
    def user_mistake(args):
        raise UserError("--data x: no such thing")

    def bug(args):
        raise ValueError("range() arg 3 must not be zero")
    monkeypatch.setattr("vlbridge.cli.connectors_cmd.run", user_mistake)
    assert main(["connectors"]) == 2
    assert capsys.readouterr().err == "vlbridge connectors: error: --data x: no such thing\n"
    monkeypatch.setenv("VLBRIDGE_DEBUG", "1")
    with pytest.raises(UserError):
        main(["connectors"])
    monkeypatch.delenv("VLBRIDGE_DEBUG")
    monkeypatch.setattr("vlbridge.cli.connectors_cmd.run", bug)
    with pytest.raises(ValueError, match="range"):
        main(["connectors"])
    assert "internal error" in capsys.readouterr().err


@pytest.mark.slow
def test_real_entry_point_errors(tmp_path):
    """`python -m vlbridge`: a user error is one line and exit 2; a bug is a traceback and exit 1."""
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}

    bad = subprocess.run([sys.executable, "-m", "vlbridge", "train", "--batch-size", "0", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr == "vlbridge train: error: train.batch_size: must be >= 1, got 0\n"
    assert not (tmp_path / "run").exists()
    # a bug (here a ZeroDivisionError planted in a command) keeps Python's traceback and exits 1
    bug = subprocess.run([sys.executable, "-c", "import sys; import vlbridge.cli.connectors_cmd as c; "
                          "c.run = lambda args: 1 / 0; from vlbridge.cli.main import main; sys.exit(main(['connectors']))"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "ZeroDivisionError" in bug.stderr
    assert "internal error" in bug.stderr


# ---- help -------------------------------------------------------------------------------------------------
def test_help_shows_the_presets_values(capsys):
    def help_of(*argv):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        return " ".join(capsys.readouterr().out.split())        # unwrapped
    tiny = help_of("train")
    assert "optimizer steps [tiny-cpu: 800]" in tiny and "[tiny-cpu: pixel_shuffle]" in tiny
    assert "(choices: linear, mlp," in tiny and "(choices: token, sqrt, answer)" in tiny
    assert "optimizer steps [clip-qwen2: 2000]" in help_of("train", "--preset", "clip-qwen2")
    assert "[arena-cpu: 500]" in help_of("arena")
    assert "[required]" in help_of("pretrain-vision") and "[tiny-cpu: 64]" in help_of("pretrain-vision")
    connectors = help_of("connectors")
    assert "--train.steps" not in connectors and "--data" not in connectors and "--model.llm.arch" in connectors


def test_usage_is_short_and_names_required_options(capsys):
    err = error_of(["pretrain-vision"], capsys)
    assert err.splitlines()[0] == ("vlbridge pretrain-vision: error: the following arguments are required: "
                                   "--annotations, --out")
    assert PARSER.format_usage() == "usage: vlbridge COMMAND ... [OPTIONS]\n"
    usage = dict(commands())[("lavit", "prepare")].format_usage()
    assert usage.startswith("usage: vlbridge lavit prepare --tokenizer TOKENIZER --data DATA --out OUT [OPTIONS]")


@pytest.mark.parametrize("path, parser", LEAVES, ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_command_has_an_example(path, parser):
    assert f"vlbridge {' '.join(path)} " in parser.format_help().split("examples:")[-1], path


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("vlbridge 0.")
