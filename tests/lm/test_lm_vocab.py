import pytest

from lstmkit.data.vocab import EOS, UNK, Vocab


def test_build_orders_by_count_then_first_appearance():
    v = Vocab.build(["b", "a", "c", "a", "b", "a", "d"])
    assert v.itos == [UNK, EOS, "a", "b", "c", "d"]  # a x3, b x2, then c, d in text order
    assert v.stoi["a"] == 2 and v.unk_token == UNK and v.unk_id == 0


@pytest.mark.parametrize(
    "min_count, max_size, expected",
    [
        (1, None, ["a", "b", "c"]),
        (2, None, ["a", "b"]),
        (3, None, ["a"]),
        (1, 4, ["a", "b"]),
        (1, 2, []),
    ],
)
def test_min_count_and_max_size(min_count, max_size, expected):
    v = Vocab.build(["a", "a", "a", "b", "b", "c"], min_count=min_count, max_size=max_size)
    assert v.itos == [UNK, EOS, *expected]
    assert max_size is None or len(v) <= max_size


def test_encode_maps_unknown_to_unk_and_decode_inverts():
    v = Vocab.build(["i", "drank", "apple", "juice"])
    ids = v.encode(["i", "drank", "pear"])
    assert ids == [v.stoi["i"], v.stoi["drank"], v.unk_id]
    assert v.decode(ids) == ["i", "drank", UNK]
    with pytest.raises(IndexError, match="outside the vocabulary"):
        v.decode([len(v)])


def test_specials_present_even_if_in_text_and_count_once():
    v = Vocab.build(["x", EOS, EOS, "x", UNK])
    assert v.itos == [UNK, EOS, "x"]


def test_no_unknown_token_raises_on_unseen():
    v = Vocab.build("abc", specials=())
    assert v.unk_token is None and v.encode("cab") == [2, 0, 1]
    with pytest.raises(KeyError, match="no unknown token"):
        v.encode("abz")


def test_json_round_trip_and_equality():
    v = Vocab.build(["héllo", "wörld", "日本", "héllo"])
    w = Vocab.from_json(v.to_json())
    assert w == v and w.itos == v.itos and w.stoi == v.stoi


@pytest.mark.parametrize(
    "text, match", [("{", "not valid JSON"), ('{"itos": []}', "format"), ("[1, 2]", "format")]
)
def test_bad_json_is_a_clear_error(text, match):
    with pytest.raises(ValueError, match=match):
        Vocab.from_json(text)


def test_invalid_constructions():
    with pytest.raises(ValueError, match="appears twice"):
        Vocab(["<unk>", "a", "a"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Vocab(["a", "b"])
    with pytest.raises(ValueError, match="leaves no room"):
        Vocab.build(["a"], max_size=1)
    with pytest.raises(ValueError, match="min_count"):
        Vocab.build(["a"], min_count=0)
