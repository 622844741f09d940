import pytest

from lstmkit.data.text import (
    TextDataError,
    detokenize,
    prompt_tokens,
    read_text,
    read_tokens,
    tokenize,
)
from lstmkit.data.vocab import EOS


def test_levels():
    text = "the cat  sat\n\n a <unk> N\n"
    assert tokenize(text, "char") == list(text)
    assert tokenize(text, "word") == ["the", "cat", "sat", EOS, EOS, "a", "<unk>", "N", EOS]
    assert tokenize(text, "ptb") == ["the", "cat", "sat", EOS, "a", "<unk>", "N", EOS]
    with pytest.raises(ValueError, match="level must be one of"):
        tokenize(text, "bytes")


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(TextDataError, match="does not exist"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(TextDataError, match="not a file"):
        read_text(tmp_path)
    (tmp_path / "empty.txt").write_text(" \n\n")
    with pytest.raises(TextDataError, match="empty"):
        read_tokens(tmp_path / "empty.txt", "word")


def test_non_utf8_says_where_and_replace_option(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"first line\nsecond caf" + b"\xe9 ok\n")
    with pytest.raises(TextDataError, match=r"byte 0xe9 at byte offset 21 \(line 2, column 11\)"):
        read_text(p)
    with pytest.raises(TextDataError, match="--encoding-errors replace"):
        read_text(p)
    assert read_tokens(p, "word", errors="replace")[4] == "caf\ufffd"


def test_bom_is_not_content(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfhi there\n")
    assert read_tokens(p, "word") == ["hi", "there", EOS]


@pytest.mark.parametrize("level", ["char", "word"])
def test_detokenize_inverts_tokenize_on_normalised_text(level):
    text = "one two\nthree four five\n"
    assert detokenize(tokenize(text, level), level) == text


def test_prompt_has_no_trailing_eos():
    assert prompt_tokens("i drank apple", "word") == ["i", "drank", "apple"]
    assert prompt_tokens("a b\nc", "ptb") == ["a", "b", EOS, "c"]
    assert prompt_tokens("ab\n", "char") == ["a", "b", "\n"]
