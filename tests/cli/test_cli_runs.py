"""Runs through `main(argv)`: work is never overwritten by accident, eval scores what was asked or fails, path
hints, and the interactive chat."""
from __future__ import annotations

import hashlib
import io
import json

import pytest

from support import tiny_run_config
from vlbridge.cli.main import main
from vlbridge.config import save_json


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def saved_model(untied_tiny_model, tmp_path_factory):
    """RUN/final of a fake run dir holding a saved tiny model."""
    path = tmp_path_factory.mktemp("run") / "final"
    untied_tiny_model.save_pretrained(path)
    return path


@pytest.fixture
def tiny_json(shapes_dir, tmp_path):
    path = tmp_path / "tiny.json"
    save_json(tiny_run_config(shapes_dir, tmp_path / "unused", steps=1), path)
    return path


# ---- never destroy work ---------------------------------------------------------------------------------
def test_train_refuses_a_finished_run_and_keeps_its_weights(saved_model, tiny_json, shapes_dir, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(saved_model, run / "final")                      # a run with final/ and no checkpoints
    before = {p.name: digest(p) for p in (run / "final").iterdir() if p.is_file()}
    argv = ["train", "--config", str(tiny_json), "--data", str(shapes_dir), "--out", str(run)]
    for extra, message in (([], "already holds a trained model"), (["--resume"], "but no checkpoint to resume")):
        assert main(argv + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "--overwrite" in err
    assert {p.name: digest(p) for p in (run / "final").iterdir() if p.is_file()} == before
    assert sorted(p.name for p in run.iterdir()) == ["final"]        # no config.json, no log written
    assert main(argv + ["--resume", "--overwrite"]) == 2
    assert "pass one of them" in capsys.readouterr().err


def test_overwrite_replaces_the_run_after_its_inputs_load(saved_model, tiny_json, shapes_dir, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(saved_model, run / "final")
    (run / "notes.txt").write_text("mine")
    old = digest(run / "final" / "model.safetensors")
    # bad input with --overwrite: refused before anything is removed
    assert main(["train", "--config", str(tiny_json), "--data", str(tmp_path / "nowhere"), "--out", str(run),
                 "--overwrite"]) == 2
    assert digest(run / "final" / "model.safetensors") == old
    assert main(["train", "--config", str(tiny_json), "--data", str(shapes_dir), "--out", str(run),
                 "--overwrite", "--seed", "3"]) == 0
    assert digest(run / "final" / "model.safetensors") != old
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 3
    assert (run / "notes.txt").read_text() == "mine"                  # only the run's own outputs are replaced
    # the finished run has checkpoints now: another plain `train` is refused, --resume continues it
    assert main(["train", "--config", str(tiny_json), "--data", str(shapes_dir), "--out", str(run)]) == 2
    assert "--resume to continue it" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--data", "nowhere"], ["--batch-size", "0"], ["--stage", "det", "--data", "nowhere"],
                                 ["--model.connector.options", '{"depht": 2}']])
def test_nothing_is_written_before_the_inputs_validate(bad, tiny_json, shapes_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--config", str(tiny_json), "--data", str(shapes_dir), "--out", str(out)]
    assert main(argv + [b if b != "nowhere" else str(tmp_path / "nowhere") for b in bad]) == 2
    assert not out.exists()
    assert "Traceback" not in capsys.readouterr().err


def test_pretrain_vision_refuses_an_encoder_dir(tmp_path, shapes_dir, capsys):
    out = tmp_path / "vision"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    assert main(["pretrain-vision", "--annotations", str(shapes_dir / "scenes.json"), "--out", str(out),
                 "--steps", "1"]) == 2
    assert "already holds a model" in capsys.readouterr().err and (out / "model.safetensors").read_bytes() == b"weights"


# ---- eval: what was asked, or a failure -----------------------------------------------------------------
def eval_argv(model, data, out, *extra):
    return ["eval", "--model", str(model), "--data", str(data), "--out", str(out), "--limit", "1",
            "--max-new-tokens", "2", *extra]


def test_eval_tasks_are_checked_against_the_data(saved_model, shapes_dir, tmp_path, capsys):
    assert main(eval_argv(saved_model, shapes_dir / "test.json", tmp_path / "out", "--tasks", "colour")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no task 'colour' (did you mean 'color'?)" in err and "count" in err
    assert not (tmp_path / "out").exists()
    assert main(["eval", "--data", str(shapes_dir / "test.json"), "--tasks", "list"]) == 0
    listed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    records = json.loads((shapes_dir / "test.json").read_text())
    assert {t: int(n) for t, n in listed.items()} == {t: sum(r["task"] == t for r in records)
                                                     for t in {r["task"] for r in records}}


def test_eval_json_and_the_overall_row(saved_model, shapes_dir, tmp_path, capsys):
    assert main(eval_argv(saved_model, shapes_dir / "test.json", tmp_path / "out", "--tasks", "color,shape",
                          "--json")) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["metrics"]) == {"color", "shape", "overall"} and printed["out"] == str(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert printed["metrics"] == saved["metrics"]
    assert "| overall | exact match over all records |" in (tmp_path / "out" / "metrics.md").read_text()


def test_eval_that_scores_nothing_fails(saved_model, shapes_dir, tmp_path, capsys):
    records = json.loads((shapes_dir / "test.json").read_text())[:3]
    for r in records:
        r["image"] = "missing.png"
    data = tmp_path / "bad.json"
    data.write_text(json.dumps(records))
    assert main(eval_argv(saved_model, data, tmp_path / "out", "--image-folder", str(shapes_dir))) == 2
    err = capsys.readouterr().err
    assert "no records to evaluate" in err and "3" in err and not (tmp_path / "out").exists()


# ---- path hints -------------------------------------------------------------------------------------------
def test_path_hints(saved_model, shapes_dir, tmp_path, capsys):
    assert main(eval_argv(saved_model, shapes_dir, tmp_path / "out")) == 2
    assert f"is a folder, not a JSON file of records: pass {shapes_dir / 'test.json'}" in capsys.readouterr().err
    run = saved_model.parent
    assert main(eval_argv(run, shapes_dir / "test.json", tmp_path / "out")) == 2
    assert f"{run} is a training run, not a saved model: did you mean {saved_model}?" in capsys.readouterr().err
    assert main(["chat", "--model", str(tmp_path / "nope"), "--prompt", "hi"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--config", str(run), "--print-config"]) == 2
    assert "is a folder: pass the run config file" in capsys.readouterr().err
    assert main(["train", "--config", str(saved_model / "config.json"), "--print-config"]) == 2
    assert f"--init-from {saved_model}" in capsys.readouterr().err


# ---- chat -------------------------------------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def chat(monkeypatch, capsys, argv, lines, tty):
    inputs, prompts = iter(lines), []

    def fake_input(prompt=""):
        prompts.append(prompt)
        try:
            return next(inputs)
        except StopIteration:
            raise EOFError from None
    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr("sys.stdin", Terminal() if tty else io.StringIO())
    assert main(["chat", *argv, "--max-new-tokens", "3"]) == 0
    out, err = capsys.readouterr()
    return out, err, prompts


def test_chat_commands_at_a_terminal(saved_model, shapes_dir, monkeypatch, capsys):
    image = sorted((shapes_dir / "images").glob("test_*.png"))[0]
    lines = ["/help", "What color is the circle?", "/frobnicate", "/rest", "/image nowhere.png", "/reset",
             "And the square?", "/quit", "never read"]
    out, err, prompts = chat(monkeypatch, capsys, ["--model", str(saved_model), "--image", str(image)], lines, True)
    assert out.count("model> ") == 2                                 # only the two questions reach the model
    assert out.count("/image PATH") >= 2                             # the banner and /help
    assert "unknown command /frobnicate; /help lists the commands" in out
    assert "unknown command /rest (did you mean '/reset'?)" in out
    assert "cannot use nowhere.png" in out and f"new conversation (image {image} kept)" in out
    assert prompts == ["you> "] * 8 and "no image" not in out


def test_chat_piped_prints_only_answers(saved_model, monkeypatch, capsys):
    out, err, prompts = chat(monkeypatch, capsys, ["--model", str(saved_model)], ["What is it?", "/reset", "And?"],
                             False)
    assert len(out.splitlines()) == 2 and "model>" not in out and "you>" not in out
    assert set(prompts) == {""} and "no image attached" in err and "new conversation" in err


def test_chat_trims_the_oldest_turns_at_the_length_limit(saved_model, shapes_dir, tmp_path, monkeypatch, capsys):
    import shutil
    model = tmp_path / "short"
    shutil.copytree(saved_model, model)
    meta = json.loads((model / "config.json").read_text())
    meta["llm"]["max_length"] = 48                                   # 16 visual tokens + a short exchange or two
    (model / "config.json").write_text(json.dumps(meta))
    image = sorted((shapes_dir / "images").glob("test_*.png"))[0]
    questions = ["What color is the circle?", "What shape is the red object?", "How many shapes are there?",
                 "Is there a blue square? " * 6]
    out, err, _ = chat(monkeypatch, capsys, ["--model", str(model), "--image", str(image)], questions, False)
    assert len(out.splitlines()) == 3                                # the too-long question is not sent
    assert "dropped the oldest" in err and "longer than the model's 48 positions" in err
