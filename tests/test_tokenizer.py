"""The offline CLIP tokenizer has the ids of open_clip's (and so of Stable Diffusion's) tokenizer."""

import open_clip
import pytest

from noiseclr_lab.tokenizer import build_clip_tokenizer


@pytest.mark.parametrize("text", ["a cartoon face with red hair, glasses", "A PHOTO of a dog!", "smiling   person 123", "naïve café"])
def test_ids_match_open_clip(text):
    ours = build_clip_tokenizer()(text).input_ids
    ref = open_clip.get_tokenizer("ViT-B-32")([text])[0].tolist()
    assert ours == ref[: len(ours)] and all(t == 0 for t in ref[len(ours):])


def test_special_tokens_and_length():
    tok = build_clip_tokenizer()
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407 and tok.pad_token_id == 49407


def test_building_leaves_no_files_behind(tmp_path, monkeypatch):
    import noiseclr_lab.tokenizer as tokenizer

    written = []
    write = tokenizer.write_clip_tokenizer_files
    monkeypatch.setattr(tokenizer, "write_clip_tokenizer_files", lambda folder, **kw: written.append(write(folder, **kw)))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where TemporaryDirectory makes its folder
    tok = build_clip_tokenizer(model_max_length=16)
    assert len(written) == 1 and written[0].parent == tmp_path  # the files went here...
    assert list(tmp_path.iterdir()) == []  # ...and were removed once read (each build used to leave 1.5 MB)
    tok.add_tokens(["<d1>"])  # the tokenizer needs no files after loading
    assert tok("a <d1> face").input_ids[2] == 49408 and tok.model_max_length == 16
