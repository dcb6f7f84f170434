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
