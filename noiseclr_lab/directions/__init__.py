"""Direction banks: storage, installation into pipelines, official-format import, textual-inversion export."""

from noiseclr_lab.directions.bank import DirectionBank, tokenizer_fingerprint
from noiseclr_lab.directions.official import import_official

__all__ = ["DirectionBank", "import_official", "tokenizer_fingerprint"]
