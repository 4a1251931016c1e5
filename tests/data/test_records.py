"""Tests for vlbridge.data.records and vlbridge.data.images: LLaVA-style JSON loading, validation and image decoding."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlbridge.data.images import ImageError, load_image
from vlbridge.data.records import (
    IMAGE_TOKEN,
    DataError,
    Record,
    SkipReport,
    Turn,
    check_record,
    load_records,
)


# --------------------------------------------------------------------------- helpers


def conv(question: str = "<image>\nWhat colour is it?", answer: str = "Red.") -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def rgb_png(path: Path, color=(200, 10, 10), size=(4, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def check(raw: dict, folder: Path, **kw) -> Record:
    return check_record(raw, 3, "data.json", folder, **kw)


def bad(raw: dict, folder: Path, kind: str, *words: str, **kw) -> DataError:
    """Assert check_record raises a DataError of ``kind`` naming the record and the problem."""
    with pytest.raises(DataError) as info:
        check(raw, folder, **kw)
    err = info.value
    msg = str(err)
    assert err.kind == kind, msg
    assert err.index == 3 and err.file == "data.json"
    assert msg.startswith(f"data.json: record {err.record_id!r} (#3): ")
    for word in words:
        assert word in msg, msg
    return err


# --------------------------------------------------------------------------- good records


def test_single_image_record_loads(tmp_path):
    rgb_png(tmp_path / "img" / "a.png")
    rec = check({"id": "r1", "image": "img/a.png", "conversations": conv(), "task": "color"}, tmp_path)
    assert rec.id == "r1" and rec.index == 3 and rec.task == "color"
    assert rec.images == [(tmp_path / "img" / "a.png").resolve()]
    assert rec.turns == [Turn("user", "<image>\nWhat colour is it?"), Turn("assistant", "Red.")]
    assert rec.notes == []


def test_single_image_without_placeholder_gets_one(tmp_path):
    rgb_png(tmp_path / "a.png")
    rec = check({"id": "r1", "image": "a.png", "conversations": conv("Describe it.")}, tmp_path)
    assert rec.turns[0].text == f"{IMAGE_TOKEN}\nDescribe it."


def test_multi_image_record_with_two_placeholders(tmp_path):
    rgb_png(tmp_path / "a.png")
    rgb_png(tmp_path / "b.png")
    raw = {"id": "m", "image": ["a.png", "b.png"], "conversations": conv("<image> vs <image>: which is red?", "The first.")}
    rec = check(raw, tmp_path)
    assert rec.images == [(tmp_path / "a.png").resolve(), (tmp_path / "b.png").resolve()]


def test_text_only_record_and_alternative_roles(tmp_path):
    raw = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "user", "value": "Hi"},
            {"from": "assistant", "value": "Hello"},
            {"from": "human", "value": "Bye"},
            {"from": "gpt", "value": "Bye"},
        ]
    }
    rec = check(raw, tmp_path)
    assert rec.images == [] and rec.id == "#3" and rec.task is None
    assert [t.role for t in rec.turns] == ["system", "user", "assistant", "user", "assistant"]


def test_load_records_default_folder_and_explicit_folder(tmp_path):
    rgb_png(tmp_path / "a.png")
    data = write_json(tmp_path / "d.json", [{"id": "x", "image": "a.png", "conversations": conv()}, {"conversations": conv("Hi")}])
    recs = load_records(data)
    assert [r.id for r in recs] == ["x", "#1"]
    assert recs[0].images == [(tmp_path / "a.png").resolve()]
    assert recs[0].file == str(data)

    other = tmp_path / "elsewhere"
    rgb_png(other / "a.png")
    recs = load_records(data, other)
    assert recs[0].images == [(other / "a.png").resolve()]


# --------------------------------------------------------------------------- bad records


def test_missing_image(tmp_path):
    err = bad({"id": "r7", "image": "nope.png", "conversations": conv()}, tmp_path, "missing_image", "'r7'", "nope.png", "not found")
    assert err.record_id == "r7"


def test_text_file_named_png_is_unreadable(tmp_path):
    (tmp_path / "fake.png").write_text("this is not an image")
    bad({"id": "r", "image": "fake.png", "conversations": conv()}, tmp_path, "unreadable_image", "'r'", "fake.png", "cannot read image")


def test_header_truncated_png_is_unreadable(tmp_path):
    rgb_png(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:20])
    bad({"id": "r", "image": "cut.png", "conversations": conv()}, tmp_path, "unreadable_image", "cut.png")


def test_truncated_pixel_data_raises_in_load_image(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    # The header is intact, so the cheap record check passes ...
    rec = check({"id": "r", "image": "cut.png", "conversations": conv()}, tmp_path)
    # ... and the full decode refuses it.
    with pytest.raises(ImageError) as info:
        load_image(rec.images[0], where=rec.where)
    assert info.value.kind == "unreadable_image"
    assert isinstance(info.value, ValueError)
    assert "'r' (#3)" in str(info.value) and "cut.png" in str(info.value)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "CMYK", "L", "1", "F"])
def test_reject_mode_refuses_non_rgb(tmp_path, mode):
    Image.new(mode, (2, 2)).save(tmp_path / "m.tiff")
    bad({"id": "r", "image": "m.tiff", "conversations": conv()}, tmp_path, "image_mode", "'r'", repr(mode), image_modes="reject")
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "m.tiff", image_modes="reject")
    assert info.value.kind == "image_mode"


def test_convert_mode_records_note(tmp_path):
    Image.new("RGBA", (2, 2)).save(tmp_path / "a.png")
    rec = check({"id": "r", "image": "a.png", "conversations": conv()}, tmp_path)
    assert len(rec.notes) == 1
    assert "'r'" in rec.notes[0] and "a.png" in rec.notes[0] and "RGBA" in rec.notes[0]


def test_bomb_refused_from_header(tmp_path):
    rgb_png(tmp_path / "tiny.png", size=(1, 1))
    bad({"id": "b", "image": "tiny.png", "conversations": conv()}, tmp_path, "image_too_large", "'b'", "1x1", max_pixels=0)
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "tiny.png", max_pixels=0)
    assert info.value.kind == "image_too_large"


def test_real_large_image_refused_without_decoding(tmp_path, monkeypatch):
    Image.new("1", (9000, 9000)).save(tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size < 100_000  # small on disk, 81 Mpx decoded

    def no_decode(self, *a, **k):
        raise AssertionError("pixels must not be decoded")

    monkeypatch.setattr(Image.Image, "load", no_decode)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decode)
    bad({"id": "b", "image": "big.png", "conversations": conv()}, tmp_path, "image_too_large", "9000x9000")
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "big.png")
    assert info.value.kind == "image_too_large" and "9000x9000" in str(info.value)


def test_pil_decompression_bomb_error_is_caught(tmp_path, monkeypatch):
    rgb_png(tmp_path / "a.png", size=(10, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # PIL errors above 2 * 10 pixels
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "a.png", max_pixels=None)
    assert info.value.kind == "image_too_large"


@pytest.mark.parametrize(
    "question, images, words",
    [
        ("<image> and <image>", ["a.png"], ["2 <image> placeholder(s) but 1 image(s)"]),
        ("<image> here", [], ["1 <image> placeholder(s) but 0 image(s)"]),
        ("no placeholder", ["a.png", "b.png"], ["0 <image> placeholder(s) but 2 image(s)"]),
        ("<image> only one", ["a.png", "b.png"], ["1 <image> placeholder(s) but 2 image(s)"]),
    ],
)
def test_placeholder_mismatch(tmp_path, question, images, words):
    rgb_png(tmp_path / "a.png")
    rgb_png(tmp_path / "b.png")
    raw = {"id": "p", "conversations": conv(question)}
    if images:
        raw["image"] = images
    bad(raw, tmp_path, "placeholders", "'p'", *words)


def test_image_in_assistant_turn_is_an_image_to_produce(tmp_path):
    rgb_png(tmp_path / "a.png")
    rec = check({"id": "p", "image": "a.png", "conversations": conv("Draw a red square.", "Here: <image>")}, tmp_path)
    assert rec.turns[1].text == "Here: <image>" and rec.images == [(tmp_path / "a.png").resolve()]


def test_placeholder_in_system_turn(tmp_path):
    rgb_png(tmp_path / "a.png")
    turns = [{"from": "system", "value": "<image>"}] + conv("Hi", "Hello")
    bad({"id": "p", "image": "a.png", "conversations": turns}, tmp_path, "placeholders", "'p'", "system turn 0")


# --------------------------------------------------------------------------- document records


def test_document_record_parses_with_images_in_order(tmp_path):
    for name in ("f0.png", "f1.png", "f2.png"):
        rgb_png(tmp_path / name)
    raw = {"id": "story", "images": ["f0.png", "f1.png", "f2.png"], "task": "story",
           "text": "<image> a red circle. <image> a red circle. <image> a blue circle."}
    rec = check(raw, tmp_path)
    assert rec.is_document and [t.role for t in rec.turns] == ["document"]
    assert [p.name for p in rec.images] == ["f0.png", "f1.png", "f2.png"] and rec.task == "story"
    with_answer = check({**raw, "id": "q", "answer": " red"}, tmp_path)
    assert [(t.role, t.text) for t in with_answer.turns][1] == ("completion", " red")


@pytest.mark.parametrize(
    "raw, kind, words",
    [
        ({"text": "<image> a <image>", "images": ["a.png"]}, "placeholders", ["2 <image> placeholder(s) but 1 image(s)"]),
        ({"text": "no placeholder", "images": ["a.png"]}, "placeholders", ["0 <image> placeholder(s)"]),
        ({"text": "   ", "images": []}, "empty_conversation", ['"text" is empty']),
        ({"text": 5}, "bad_field", ['"text" must be a string']),
        ({"text": "<image>", "images": ["a.png"], "answer": 3}, "bad_field", ['"answer" must be a string']),
        ({"text": "<image>", "images": "a.png", "image": "a.png"}, "bad_field", ['"image" or "images", not both']),
        ({"text": "<image>", "images": ["a.png"], "conversations": conv()}, "bad_field", ["not both"]),
        ({"conversations": conv("Hi", "Hello"), "answer": "x"}, "bad_field", ['"answer" belongs to a document']),
        ({"text": "<image>", "images": ["missing.png"]}, "missing_image", ["missing.png"]),
        ({"text": "<image>", "images": ["../a.png"]}, "path_escape", ["outside the image folder"]),
    ],
)
def test_bad_document_records_are_named(tmp_path, raw, kind, words):
    rgb_png(tmp_path / "a.png")
    bad({"id": "doc", **raw}, tmp_path, kind, "'doc'", *words)


def test_documents_and_chats_load_side_by_side_and_bad_ones_are_counted(tmp_path):
    rgb_png(tmp_path / "a.png")
    records = [{"id": "chat", "image": "a.png", "conversations": conv()},
               {"id": "doc", "images": ["a.png", "a.png"], "text": "<image> one <image> two"},
               {"id": "bad_doc", "images": ["a.png"], "text": "no image here"},
               {"id": "neither", "image": "a.png"}]
    report = SkipReport()
    loaded = load_records(write_json(tmp_path / "d.json", records), on_error="skip", report=report)
    assert [r.id for r in loaded] == ["chat", "doc"] and [r.is_document for r in loaded] == [False, True]
    assert [e.record_id for e in report.entries] == ["bad_doc", "neither"]
    assert report.counts() == {"placeholders": 1, "empty_conversation": 1}
    assert "skipped 2 of 4 records" in report.summary(4) and "'bad_doc'" in report.summary(4)


@pytest.mark.parametrize(
    "conversations, kind, word",
    [
        (None, "empty_conversation", "conversations"),
        ([], "empty_conversation", "conversations"),
        ([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "  "}], "empty_conversation", "empty text"),
        ([{"from": "system", "value": "Be nice."}], "empty_conversation", "only a system turn"),
        ([{"from": "gpt", "value": "Hi"}, {"from": "human", "value": "Hi"}], "bad_roles", "'user' was expected"),
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], "bad_roles", "'assistant' was expected"),
        ([{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}], "bad_roles", "ends with a user turn"),
        ([{"from": "human", "value": "a"}, {"from": "system", "value": "b"}], "bad_roles", "'system'"),
        ([{"from": "robot", "value": "a"}, {"from": "gpt", "value": "b"}], "bad_roles", "unknown role 'robot'"),
    ],
)
def test_bad_conversations(tmp_path, conversations, kind, word):
    raw = {"id": "c"}
    if conversations is not None:
        raw["conversations"] = conversations
    bad(raw, tmp_path, kind, "'c'", word)


def test_path_escape_dotdot(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rgb_png(tmp_path / "x.png")  # exists, but outside the folder
    bad({"id": "e", "image": "../x.png", "conversations": conv()}, folder, "path_escape", "'e'", "../x.png", "outside the image folder")


def test_path_escape_absolute(tmp_path):
    folder = tmp_path / "images"
    outside = rgb_png(tmp_path / "x.png")
    rgb_png(folder / "in.png")
    bad({"id": "e", "image": str(outside), "conversations": conv()}, folder, "path_escape", "outside the image folder")
    # An absolute path inside the folder is fine.
    rec = check({"id": "ok", "image": str(folder / "in.png"), "conversations": conv()}, folder)
    assert rec.images == [(folder / "in.png").resolve()]


def test_path_escape_symlink(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    outside = rgb_png(tmp_path / "secret.png")
    try:
        os.symlink(outside, folder / "link.png")
    except OSError:
        pytest.skip("symlinks not supported here")
    bad({"id": "e", "image": "link.png", "conversations": conv()}, folder, "path_escape", "link.png", "outside the image folder")


def test_path_escape_checked_even_without_image_checks(tmp_path):
    bad({"id": "e", "image": "../x.png", "conversations": conv()}, tmp_path, "path_escape", check_images=False)
    # Missing files are not looked for when check_images=False.
    rec = check({"id": "ok", "image": "nope.png", "conversations": conv()}, tmp_path, check_images=False)
    assert rec.images == [(tmp_path / "nope.png").resolve()]


@pytest.mark.parametrize(
    "raw, word",
    [
        ({"image": 5, "conversations": conv()}, '"image" must be a string or a list'),
        ({"image": ["a.png", 3], "conversations": conv()}, '"image"[1]'),
        ({"conversations": "hello"}, '"conversations" must be a list'),
        ({"conversations": [{"role": "user", "content": "x"}]}, "conversations[0]"),
        ({"conversations": [{"from": "human", "value": 1}, {"from": "gpt", "value": "x"}]}, 'conversations[0]["value"]'),
        ({"conversations": conv("Hi"), "task": 3}, '"task" must be a string'),
    ],
)
def test_bad_field_types(tmp_path, raw, word):
    bad({"id": "f", **raw}, tmp_path, "bad_field", "'f'", word)


def test_record_not_an_object(tmp_path):
    err = bad(["not", "a", "dict"], tmp_path, "bad_field", "JSON object")
    assert err.record_id == "#3"


# --------------------------------------------------------------------------- file-level errors


def test_missing_json_file(tmp_path):
    with pytest.raises(DataError) as info:
        load_records(tmp_path / "nope.json")
    err = info.value
    assert err.index == -1 and err.record_id is None and err.kind == "missing_file"
    assert "nope.json" in str(err) and "not found" in str(err)


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"id": "a",\n   "conversations": [}\n]')
    with pytest.raises(DataError) as info:
        load_records(path)
    err = info.value
    assert err.index == -1 and err.record_id is None and err.kind == "bad_json"
    assert str(err).startswith(f"{path}: invalid JSON at line 3 column")


def test_json_not_a_list(tmp_path):
    path = write_json(tmp_path / "d.json", {"id": "a"})
    with pytest.raises(DataError, match="must be a JSON list") as info:
        load_records(path, on_error="skip")
    assert info.value.kind == "bad_json"


# --------------------------------------------------------------------------- raise / skip and the report


def mixed_file(tmp_path: Path) -> Path:
    rgb_png(tmp_path / "ok.png")
    Image.new("RGBA", (2, 2)).save(tmp_path / "alpha.png")
    return write_json(
        tmp_path / "d.json",
        [
            {"id": "good", "image": "ok.png", "conversations": conv()},
            {"id": "gone", "image": "missing.png", "conversations": conv()},
            {"id": "alpha", "image": "alpha.png", "conversations": conv()},
            {"id": "gone2", "image": "missing2.png", "conversations": conv()},
            {"id": "chat", "conversations": [{"from": "human", "value": "hi"}]},
        ],
    )


def test_on_error_raise_raises_first(tmp_path):
    path = mixed_file(tmp_path)
    with pytest.raises(DataError) as info:
        load_records(path)
    assert info.value.record_id == "gone" and info.value.index == 1 and info.value.kind == "missing_image"


def test_on_error_skip_fills_report(tmp_path):
    path = mixed_file(tmp_path)
    report = SkipReport()
    recs = load_records(path, on_error="skip", report=report)
    assert [r.id for r in recs] == ["good", "alpha"]
    assert report.counts() == {"missing_image": 2, "bad_roles": 1}
    assert [e.record_id for e in report.entries] == ["gone", "gone2", "chat"]
    assert len(report.notes) == 1 and "'alpha'" in report.notes[0] and "RGBA" in report.notes[0]

    summary = report.summary(5)
    assert summary.startswith("skipped 3 of 5 records: 2 missing_image, 1 bad_roles")
    assert "'gone'" in summary and "missing.png" in summary

    out = tmp_path / "out" / "skipped.jsonl"
    report.write_jsonl(out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["gone", "gone2", "chat"]
    assert lines[0] == {"file": str(path), "index": 1, "id": "gone", "kind": "missing_image", "problem": report.entries[0].problem}


def test_skip_without_report_logs_warning(tmp_path, caplog):
    path = mixed_file(tmp_path)
    with caplog.at_level("WARNING"):
        recs = load_records(path, on_error="skip")
    assert len(recs) == 2
    assert "skipped 3 of 5 records" in caplog.text


def test_empty_report_summary():
    assert SkipReport().summary(10) == "no records skipped"
    assert SkipReport().counts() == {}


def test_reject_mode_in_load_records(tmp_path):
    path = mixed_file(tmp_path)
    report = SkipReport()
    recs = load_records(path, on_error="skip", report=report, image_modes="reject")
    assert [r.id for r in recs] == ["good"]
    assert report.counts()["image_mode"] == 1 and report.notes == []


def test_too_long_kind_and_pickling(tmp_path):
    rec = check({"id": "t", "conversations": conv("Hi")}, tmp_path)
    err = DataError.for_record(rec, "5000 tokens exceed the limit of 4096", "too_long")
    assert str(err) == "data.json: record 't' (#3): 5000 tokens exceed the limit of 4096"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.kind == "too_long"


# --------------------------------------------------------------------------- image conversion


def test_rgb_image_has_no_note(tmp_path):
    img, note = load_image(rgb_png(tmp_path / "a.png", color=(1, 2, 3)))
    assert img.mode == "RGB" and note is None and img.getpixel((0, 0)) == (1, 2, 3)


def test_rgba_transparent_pixel_becomes_white(tmp_path):
    src = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    src.putpixel((1, 0), (0, 0, 0, 0))
    src.save(tmp_path / "a.png")
    img, note = load_image(tmp_path / "a.png", where="d.json: record 'r' (#0)")
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((1, 0)) == (255, 255, 255)
    assert note.startswith("d.json: record 'r' (#0): ") and "alpha composited on white" in note


def test_16bit_scaled_by_range(tmp_path):
    arr = np.array([[0, 65535, 32896]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as raw:
        assert raw.mode == "I;16"
    img, note = load_image(tmp_path / "a.png")
    assert img.mode == "RGB"
    assert [img.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (255, 255, 255), (128, 128, 128)]
    assert "16-bit" in note and "257" in note


def test_32bit_int_and_float_scaled(tmp_path):
    Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32)).save(tmp_path / "i.tiff")
    img, note = load_image(tmp_path / "i.tiff")
    assert img.getpixel((2, 0)) == (255, 255, 255) and img.getpixel((1, 0))[0] == round(1000 / 257)
    assert note and "I" in note

    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tiff")
    img, note = load_image(tmp_path / "f.tiff")
    assert [img.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    assert note and "F" in note


def test_palette_images(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png")
    img, note = load_image(tmp_path / "p.png")
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((1, 0)) == (0, 0, 255)
    assert "palette" in note

    pal.save(tmp_path / "pt.png", transparency=1)
    img, note = load_image(tmp_path / "pt.png")
    assert img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((1, 0)) == (255, 255, 255)
    assert "transparency" in note


def test_cmyk_and_grey(tmp_path):
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    img, note = load_image(tmp_path / "c.jpg")
    r, g, b = img.getpixel((0, 0))
    assert img.mode == "RGB" and r > 200 and g < 60 and b < 60
    assert "CMYK" in note

    Image.new("L", (2, 2), 77).save(tmp_path / "l.png")
    img, note = load_image(tmp_path / "l.png")
    assert img.getpixel((0, 0)) == (77, 77, 77) and "grey" in note

    Image.new("1", (2, 2), 1).save(tmp_path / "b.png")
    img, note = load_image(tmp_path / "b.png")
    assert img.getpixel((0, 0)) == (255, 255, 255) and note


def test_load_image_missing_file(tmp_path):
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "none.png")
    assert info.value.kind == "missing_image"
