"""The `vlbridge` command end to end on tiny data: data -> train -> eval -> chat -> viz, plus --help."""
from __future__ import annotations

import json

import pytest

from support import tiny_run_config
from vlbridge.cli.main import build_parser, main
from vlbridge.config import save_json

pytestmark = pytest.mark.slow          # end to end: subprocesses, several trainings


def _command_paths(parser, path=()):
    """Every command and subcommand of the CLI, e.g. (), ("train",), ("lavit", "tokenizer")."""
    yield list(path)
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield from _command_paths(sub, (*path, name))


@pytest.mark.parametrize("argv", [p + ["--help"] for p in _command_paths(build_parser())],
                         ids=lambda a: " ".join(a[:-1]) or "vlbridge")
def test_help_explains_every_option(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    parser = build_parser()
    # every option of the command has a help text (argparse prints it next to the flag)
    for action in _subparser(parser, argv[:-1])._actions:
        if action.option_strings:
            assert action.help, f"{action.option_strings} has no help"
            assert action.option_strings[0] in out


def _subparser(parser, path):
    for name in path:
        sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
        parser = sub.choices[name]
    return parser


def test_cli_end_to_end(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["data", "shapes", "--out", str(data), "--n", "30", "--seed", "1", "--image_size", "32",
                 "--object_size", "0.25,0.3,0.35,0.45"]) == 0
    assert json.loads((data / "shapesworld.json").read_text())["config"]["n"] == 30

    cfg = tiny_run_config(data, tmp_path / "unused", steps=2)
    save_json(cfg, tmp_path / "tiny.json")
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "tiny.json"), "--data", str(data), "--out", str(run),
                 "--steps", "3", "--train.lr_llm", "1e-3"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["steps"] == 3 and saved["train"]["lr_llm"] == 1e-3 and saved["data"]["path"] == str(data)
    # resuming a finished run continues from its own saved config and just re-saves the final model
    assert main(["train", "--out", str(run), "--resume", "--steps", "4"]) == 0
    assert json.loads((run / "checkpoints" / "latest").read_text())["checkpoint"] == "step_000004"

    assert main(["eval", "--model", str(run / "final"), "--data", str(data / "test.json"), "--limit", "2",
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert {"color", "shape", "overall"} <= set(metrics)
    assert all(m["n"] <= 2 for t, m in metrics.items() if t != "overall")
    preds = [json.loads(x) for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert {"id", "task", "prompt", "prediction", "reference", "score"} <= set(preds[0])

    capsys.readouterr()
    image = sorted((data / "images").glob("test_*.png"))[0]
    assert main(["chat", "--model", str(run / "final"), "--image", str(image), "--prompt", "What color is it?",
                 "--max-new-tokens", "4"]) == 0
    assert main(["viz", "answers", "--model", str(run / "final"), "--data", str(data / "test.json"),
                 "--out", str(tmp_path / "answers.png"), "--images", "2"]) == 0
    assert (tmp_path / "answers.png").stat().st_size > 10_000

