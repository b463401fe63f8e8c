"""Text corpora and vocabularies (AWD-LSTM / EvNN conventions)."""
from .ptb import ptb_dir, ptb_file
from .vocab import DataError, Vocabulary, read_tokens

__all__ = ["DataError", "Vocabulary", "ptb_dir", "ptb_file", "read_tokens"]
