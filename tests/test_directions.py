"""DirectionBank: file format round trips, installation, textual-inversion export, official imports, errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from noiseclr_lab.directions import DirectionBank, import_official, tokenizer_fingerprint
from noiseclr_lab.errors import NoiseCLRLabError


def _bank(pipe=None, k=3, d=32, **kw):
    fp = tokenizer_fingerprint(pipe.tokenizer) if pipe is not None else ""
    return DirectionBank.random(k, d, std=0.5, seed=1, tokenizer_fingerprint=fp, base_model="tiny", **kw)


def test_save_load_bit_exact(tmp_path):
    bank = _bank(labels=["smile", "", "glasses"], training_config={"lr": 1e-3, "steps": [1, 2]})
    path = bank.save(tmp_path / "directions.safetensors")
    back = DirectionBank.load(path)
    assert torch.equal(back.embeddings, bank.embeddings)
    assert back.metadata() == bank.metadata()
    meta = json.loads(__import__("safetensors").safe_open(str(path), "pt").metadata()["noiseclr_lab"])
    assert set(meta) == {"format_version", "tokens", "labels", "base_model", "text_encoder_hidden_size",
                         "tokenizer_fingerprint", "training_config", "created_with", "suggested_labels",
                         "calibrated_scales"}
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file


def test_suggested_labels_round_trip_and_older_files_load(tmp_path):
    from safetensors.torch import save_file

    bank = _bank(labels=["smile", "", ""])
    bank.suggestions = ["expression=smiling (+)", "", "hair=red (-)"]
    back = DirectionBank.load(bank.save(tmp_path / "b.safetensors"))
    assert back.suggestions == bank.suggestions and back.labels == ["smile", "", ""]
    assert back.metadata()["format_version"] == 1  # no calibrated scales: older releases still read it
    bank.calibrated_scales = [2.0, None, -1.5]
    back = DirectionBank.load(bank.save(tmp_path / "c.safetensors"))
    assert back.calibrated_scales == [2.0, None, -1.5] and back.metadata()["format_version"] == 2
    bank.calibrated_scales = []
    meta = bank.metadata()
    del meta["suggested_labels"], meta["calibrated_scales"]  # a version 1 bank, before either existed
    meta["format_version"] = 1
    save_file({"embeddings": bank.embeddings}, str(tmp_path / "old.safetensors"), metadata={"noiseclr_lab": json.dumps(meta)})
    old = DirectionBank.load(tmp_path / "old.safetensors")
    assert old.suggestions == ["", "", ""] and old.calibrated_scales == [None, None, None]
    with pytest.raises(NoiseCLRLabError, match="2 suggested labels for 3 tokens"):
        DirectionBank(bank.embeddings, bank.tokens, suggestions=["a", "b"])


def test_index_by_token_and_label():
    bank = _bank(labels=["smile", "", "glasses"])
    assert bank.index("<d2>") == 1
    assert bank.index("glasses") == 2
    with pytest.raises(NoiseCLRLabError, match=r"Unknown direction 'hat'.*<d1> \(smile\)"):
        bank.index("hat")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"embeddings": torch.zeros(3), "tokens": ["<a>"]}, "matrix"),
        ({"embeddings": torch.zeros(2, 4), "tokens": ["<a>"]}, "must match"),
        ({"embeddings": torch.zeros(2, 4), "tokens": ["<a>", "<a>"]}, "unique"),
        ({"embeddings": torch.zeros(1, 4), "tokens": ["a b"]}, "spaces"),
        ({"embeddings": torch.zeros(1, 4), "tokens": ["<a>"], "labels": ["x", "y"]}, "labels"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(NoiseCLRLabError, match=match):
        DirectionBank(**kwargs)


def test_damaged_files_give_clear_errors(tmp_path):
    good = _bank().save(tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01not a safetensors file at all")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    for name, match in [("missing", "does not exist"), ("trunc", "corrupt or truncated"),
                        ("garbage", "corrupt or truncated"), ("foreign", "not a noiseclr_lab direction bank")]:
        with pytest.raises(NoiseCLRLabError, match=match):
            DirectionBank.load(tmp_path / f"{name}.safetensors")


def test_future_format_version_refused(tmp_path):
    bank = _bank()
    meta = bank.metadata() | {"format_version": 99}
    save_file({"embeddings": bank.embeddings}, str(tmp_path / "v99.safetensors"), metadata={"noiseclr_lab": json.dumps(meta)})
    with pytest.raises(NoiseCLRLabError, match="version 99"):
        DirectionBank.load(tmp_path / "v99.safetensors")


def test_install_then_encode(tiny_pipe):
    bank = _bank(tiny_pipe)
    n_vocab = len(tiny_pipe.tokenizer)

    def encode(prompt):
        toks = tiny_pipe.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            return tiny_pipe.text_encoder(toks)[0]

    plain = encode("a face")
    ids = bank.install(tiny_pipe)
    assert len(tiny_pipe.tokenizer) == n_vocab + 3
    # the prompt tokenises to the one new id, whose input row is the bank's embedding
    enc = tiny_pipe.tokenizer("a face <d2>").input_ids
    assert enc[-2] == ids[1] and enc.count(ids[1]) == 1
    rows = tiny_pipe.text_encoder.get_input_embeddings().weight[ids]
    assert torch.equal(rows, bank.embeddings)
    # encoding a direction prompt reflects the installed vector: a different bank gives a different output
    before = encode("<d1>")
    other = DirectionBank(bank.embeddings.flip(0), bank.tokens, tokenizer_fingerprint=bank.tokenizer_fingerprint)
    ids_again = other.install(tiny_pipe)  # idempotent: no new tokens, rows overwritten
    assert ids_again == ids and len(tiny_pipe.tokenizer) == n_vocab + 3
    assert not torch.allclose(before, encode("<d1>"))
    # prompts without direction tokens encode exactly as before the install
    assert torch.equal(encode("a face"), plain)


def test_install_refuses_mismatched_hidden_size(tiny_pipe):
    bank = DirectionBank.random(2, 48, base_model="other-model")
    with pytest.raises(NoiseCLRLabError, match=r"hidden size 48.*other-model.*has 32"):
        bank.install(tiny_pipe)


def test_install_refuses_other_tokenizer(tiny_pipe):
    bank = DirectionBank.random(2, 32, tokenizer_fingerprint="0123456789abcdef")
    with pytest.raises(NoiseCLRLabError, match=r"tokenizer 0123456789abcdef.*tokenizer is [0-9a-f]{16}"):
        bank.install(tiny_pipe)


def test_install_refuses_base_vocab_word(tiny_pipe):
    bank = DirectionBank(torch.zeros(1, 32), ["face</w>"])
    with pytest.raises(NoiseCLRLabError, match="base vocabulary"):
        bank.install(tiny_pipe)


def test_export_textual_inversion_loads_in_fresh_pipeline(tiny_pipe, tmp_path):
    from conftest import make_tiny_pipeline

    bank = _bank(tiny_pipe)
    paths = bank.export_textual_inversion(tmp_path / "ti")
    assert [p.name for p in paths] == ["d1.safetensors", "d2.safetensors", "d3.safetensors"]
    fresh = make_tiny_pipeline()
    fresh.load_textual_inversion([str(p) for p in paths])
    ids = fresh.tokenizer.convert_tokens_to_ids(bank.tokens)
    assert torch.equal(fresh.text_encoder.get_input_embeddings().weight[ids], bank.embeddings)


# ---------------------------------------------------------------- official NoiseCLR outputs


def _official_pipeline(pipe, n=3, seed=3):
    tokens = [f"<t{i + 1}>" for i in range(n)]
    pipe.tokenizer.add_tokens(tokens)
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer))
    ids = pipe.tokenizer.convert_tokens_to_ids(tokens)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pipe.text_encoder.get_input_embeddings().weight[ids] = torch.randn(n, 32, generator=g)
    return tokens, pipe.text_encoder.get_input_embeddings().weight[ids].detach().clone()


def test_import_official_pipeline_folder(tiny_pipe, tmp_path):
    tokens, expected = _official_pipeline(tiny_pipe)
    tiny_pipe.save_pretrained(tmp_path / "official_out")
    bank = import_official(tmp_path / "official_out")
    assert bank.tokens == tokens
    assert torch.equal(bank.embeddings, expected)


def test_import_official_learned_embeds(tiny_pipe, tmp_path):
    tokens, expected = _official_pipeline(tiny_pipe, n=12)
    # the official save_progress(): {token: (D,)}, torch.save'd; dict order need not be numeric
    torch.save({t: e for t, e in reversed(list(zip(tokens, expected)))}, tmp_path / "learned_embeds.bin")
    bank = import_official(tmp_path / "learned_embeds.bin")
    assert bank.tokens == tokens  # <t2> before <t10>
    assert torch.equal(bank.embeddings, expected)
    torch.save({"weights": expected}, tmp_path / "weights.bin")
    assert torch.equal(import_official(tmp_path / "weights.bin").embeddings, expected)


def test_import_official_accelerate_checkpoint(tiny_pipe, tmp_path):
    tokens, expected = _official_pipeline(tiny_pipe)
    ck = tmp_path / "checkpoint-1000"
    ck.mkdir()
    torch.save(tiny_pipe.text_encoder.state_dict(), ck / "pytorch_model.bin")
    bank = import_official(ck)  # a checkpoint folder works as well as the file
    assert bank.tokens == tokens
    assert torch.equal(bank.embeddings, expected)
    assert torch.equal(import_official(ck / "pytorch_model.bin", num_tokens=2).embeddings, expected[1:])


def test_import_official_accelerate_checkpoint_safetensors(tiny_pipe, tmp_path):
    """A newer accelerate's save_state writes the text encoder as model.safetensors: the folder imports too."""
    from safetensors.torch import save_file

    tokens, expected = _official_pipeline(tiny_pipe)
    ck = tmp_path / "checkpoint-1000"
    ck.mkdir()
    save_file({k: v.contiguous() for k, v in tiny_pipe.text_encoder.state_dict().items()}, str(ck / "model.safetensors"))
    (ck / "optimizer.bin").write_bytes(b"not read")
    bank = import_official(ck)
    assert bank.tokens == tokens
    assert torch.equal(bank.embeddings, expected)
    (ck / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(NoiseCLRLabError, match="corrupt or truncated"):
        import_official(ck)


class _NotATensor:
    pass


def test_import_refuses_arbitrary_pickles_and_damage(tmp_path):
    torch.save({"<t1>": _NotATensor()}, tmp_path / "evil.bin")
    with pytest.raises(NoiseCLRLabError, match="never unpickled here for safety") as e:
        import_official(tmp_path / "evil.bin")
    assert "weights_only=False" not in str(e.value)  # torch's own advice to load it unsafely is not passed on
    good = tmp_path / "good.bin"
    torch.save({"<t1>": torch.zeros(4)}, good)
    (tmp_path / "trunc.bin").write_bytes(good.read_bytes()[:100])
    with pytest.raises(NoiseCLRLabError, match="corrupt or truncated"):
        import_official(tmp_path / "trunc.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoiseCLRLabError, match="holds no official NoiseCLR output"):
        import_official(tmp_path / "empty")
    with pytest.raises(NoiseCLRLabError, match="does not exist"):
        import_official(tmp_path / "nope.bin")


def test_exports_for_a1111_comfyui_load_in_diffusers(tiny_pipe, tmp_path):
    from safetensors import safe_open

    bank = DirectionBank(torch.randn(3, 32), ["<d1>", "<d2>", "<d3>"], labels=["smile", "", "hair=red (+)"],
                         calibrated_scales=[2.5, None, -4.0], base_model="tiny",
                         tokenizer_fingerprint=tokenizer_fingerprint(tiny_pipe.tokenizer))
    paths = bank.export_embeddings(tmp_path / "a1111", "a1111")
    assert [p.name for p in paths] == ["smile.safetensors", "d2.safetensors", "hair_red.safetensors"]
    with safe_open(str(paths[2]), "pt") as fh:
        assert list(fh.keys()) == ["emb_params"] and fh.get_tensor("emb_params").shape == (1, 32)
        meta = json.loads(fh.metadata()["noiseclr_lab"])
    assert meta["token"] == "<d3>" and meta["calibrated_scale"] == -4.0 and meta["base_model"] == "tiny"
    tiny_pipe.load_textual_inversion(str(paths[0]), token="<smile>")
    row = tiny_pipe.text_encoder.get_input_embeddings().weight[tiny_pipe.tokenizer.convert_tokens_to_ids("<smile>")]
    assert torch.equal(row.detach(), bank.embeddings[0])
    assert [p.name for p in bank.export_embeddings(tmp_path / "ti", "diffusers-ti")] == [
        "d1.safetensors", "d2.safetensors", "d3.safetensors"]
    with pytest.raises(NoiseCLRLabError, match="Unknown export format 'ckpt'"):
        bank.export_embeddings(tmp_path / "x", "ckpt")


def test_export_file_names_keep_any_script_and_never_differ_only_by_case(tmp_path):
    labels = ["lächeln", "笑顔", "Smile", "smile", "x" * 300, "笑" * 100, "𠀀" * 100, "笑" * 100]
    tokens = [f"<d{k}>" for k in range(7)] + ["<" + "𠀀" * 100 + ">"]
    bank = DirectionBank(torch.randn(8, 8), tokens, labels=labels)
    names = [p.name for p in bank.export_embeddings(tmp_path, "a1111")]
    # "Smile" and "smile" would be one file on macOS / Windows: the second gets its token too
    assert names[:4] == ["lächeln.safetensors", "笑顔.safetensors", "Smile.safetensors", "smile_d3.safetensors"]
    # long labels are cut to 96 UTF-8 bytes between characters, not refused by the file system: 3-byte and
    # 4-byte letters, and a clash whose token is as long
    assert names[4:7] == ["x" * 96 + ".safetensors", "笑" * 32 + ".safetensors", "𠀀" * 24 + ".safetensors"]
    assert names[7] == "笑" * 32 + "_" + "𠀀" * 23 + ".safetensors" and len(names[7].encode()) < 255 - 40
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
