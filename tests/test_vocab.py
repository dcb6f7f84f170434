"""Concept vocabularies: toy domains, built-ins and user files; bad files are one clear error."""

from __future__ import annotations

import pytest

from noiseclr_lab.analysis.vocab import BUILTIN, list_vocabularies, load_vocabulary
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.toyworld import get_domain, list_domains


@pytest.mark.parametrize("domain", list_domains())
def test_toy_vocabulary_has_a_group_per_factor(domain):
    v = load_vocabulary(f"toy:{domain}")
    dom = get_domain(domain)
    assert list(v.groups) == [f.name for f in dom.factors]
    for f in dom.factors:
        assert tuple(v.groups[f.name]) == tuple(f.values)
        prompts = [p[0] for p in v.groups[f.name].values()]
        assert len(set(prompts)) == len(prompts)  # each value is named by its own prompt
    assert v.factor_of == {f.name: f.name for f in dom.factors}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtins_load(name):
    v = load_vocabulary(name)
    assert all(len(vals) >= 2 for vals in v.groups.values())
    assert len(v.attributes) == sum(len(vals) for vals in v.groups.values())
    assert name in list_vocabularies()


def test_user_files(tmp_path):
    txt = tmp_path / "styles.txt"
    txt.write_text("# art styles\nwatercolor\n\noil painting  # a comment\n")
    v = load_vocabulary(txt)
    assert v.groups == {"concept": {"watercolor": ["a photo of watercolor."], "oil painting": ["a photo of oil painting."]}}
    toml = tmp_path / "faces.toml"
    toml.write_text('templates = ["a face {}.", "a person {}."]\n[groups]\nsmile = ["smiling", "frowning"]\n'
                    'hair = ["with red hair", "with black hair"]\n')
    v = load_vocabulary(toml)
    assert v.attributes == ["smile=smiling", "smile=frowning", "hair=with red hair", "hair=with black hair"]
    assert v.groups["smile"]["smiling"] == ["a face smiling.", "a person smiling."]


@pytest.mark.parametrize("content, suffix, match", [
    ("", ".txt", "one group of two values|at least two"),
    ("only one\n", ".txt", "at least two"),
    ("[groups\nx = 1", ".toml", "not valid TOML"),
    ("colour = ['red', 'blue']\n", ".toml", r"needs a \[groups\] table"),
    ("[groups]\nx = ['a', 'a']\n", ".toml", "repeats a value"),
    ("[groups]\nx = [1, 2]\n", ".toml", "list of non-empty strings"),
    ("templates = ['no placeholder']\n[groups]\nx = ['a', 'b']\n", ".toml", "templates must be strings holding"),
])
def test_bad_vocabularies_are_one_error(tmp_path, content, suffix, match):
    path = tmp_path / f"v{suffix}"
    path.write_text(content)
    with pytest.raises(NoiseCLRLabError, match=match):
        load_vocabulary(path)


def test_unknown_name_lists_the_known():
    with pytest.raises(NoiseCLRLabError, match="art, cars, cats, faces, toy:faces"):
        load_vocabulary("dogs")
    with pytest.raises(NoiseCLRLabError, match="Unknown toy domain"):
        load_vocabulary("toy:dogs")
