"""The tagger's data: the CoNLL reader (columns, comments, CoNLL-U ranges, the Penn Treebank's pound sign), the tasks
derived from plain text and their rendering, duplicates, the split, the tag set and the vocabulary, and every error
on the way."""

from __future__ import annotations

import pytest

from rnnkit.data.labeled import TokenVocab
from rnnkit.data.tagging import TaggingSpec, derive, input_tokens, load_tagging, read_conll, render
from rnnkit.errors import CorpusError


def test_read_conll_columns_comments_and_sentences(tmp_path):
    path = tmp_path / "c.conll"
    path.write_text("# newdoc\nThe\tDT\nDogs\tNNS\n\n\n1\tThe\tthe\tDET\nbark\tVBP x\tVERB\n\nRun  VB\n", "utf-8")
    with pytest.raises(CorpusError, match=r"c.conll:2 has 2 column\(s\), a CoNLL line needs 4"):
        read_conll(path, token_column=2, tag_column=4)
    assert read_conll(path, tag_column=2) == [(["The", "Dogs"], ["DT", "NNS"]), (["1", "bark"], ["The", "VBP x"]),
                                              (["Run"], ["VB"])]  # "VBP x": a tab-separated column
    path.write_text("# newdoc\nThe\tDT\nDogs\tNNS\n\n\nbark\tVBP\n\nRun  VB\n", "utf-8")
    assert read_conll(path) == [(["The", "Dogs"], ["DT", "NNS"]), (["bark"], ["VBP"]), (["Run"], ["VB"])]
    conllu = tmp_path / "u.conllu"
    conllu.write_text("# sent_id = 1\n1\tDogs\tdog\tNOUN\t_\n2\tbark\tbark\tVERB\t_\n", "utf-8")
    assert read_conll(conllu, token_column=2, tag_column=4) == [(["Dogs", "bark"], ["NOUN", "VERB"])]
    ranges = tmp_path / "ranges.conllu"  # "al" is "a" + "el": the range line is not a word; nor is an empty node
    ranges.write_text("# text = Vamos al mar.\n1\tVamos\tir\tVERB\t_\t_\t_\t_\t_\t_\n"
                      "2-3\tal\t_\t_\t_\t_\t_\t_\t_\t_\t_\n2\ta\ta\tADP\t_\t_\t_\t_\t_\t_\n"
                      "3\tel\tel\tDET\t_\t_\t_\t_\t_\t_\n3.1\tmar\t_\t_\t_\t_\t_\t_\t_\t_\n"
                      "4\tmar\tmar\tNOUN\t_\t_\t_\t_\t_\t_\n", "utf-8")
    assert read_conll(ranges, token_column=2, tag_column=4) == [(["Vamos", "a", "el", "mar"],
                                                                 ["VERB", "ADP", "DET", "NOUN"])]
    spaced = tmp_path / "chunks.txt"  # CoNLL-2000 is space-separated and has no comments: "# # B-NP" is a token
    spaced.write_text("# # B-NP\n5 CD I-NP\n\n#hashtag NN O\n", "utf-8")
    assert read_conll(spaced) == [(["#", "5"], ["B-NP", "I-NP"]), (["#hashtag"], ["O"])]
    pound = tmp_path / "ptb.conll"  # the Penn Treebank's pound sign is a token, even first in a sentence
    pound.write_text("# a comment\n#\t#\n5\tCD\n\nUS\tNNP\n#\t#\n", "utf-8")
    assert read_conll(pound) == [(["#", "5"], ["#", "CD"]), (["US", "#"], ["NNP", "#"])]
    with pytest.raises(CorpusError, match="both 2 — the tag needs a column of its own"):
        read_conll(ranges, token_column=2, tag_column=2)
    with pytest.raises(CorpusError, match="--token-column 2 is the last column"):
        read_conll(pound, token_column=2)
    ragged = tmp_path / "ragged.conll"
    ragged.write_text("The\tDT\tB-NP\ndog\tNN\n", "utf-8")
    with pytest.raises(CorpusError, match=r"ragged.conll:2 has 2 columns where earlier lines have 3"):
        read_conll(ragged)
    assert read_conll(ragged, tag_column=2) == [(["The", "dog"], ["DT", "NN"])]
    path.write_text("a\tB\nb\n", "utf-8")
    with pytest.raises(CorpusError, match=r"c.conll:2 has 1 column.*--task spaces\|case"):
        read_conll(path)


@pytest.mark.parametrize("sentence", ["Tom can't swim.", "I think İstanbul is big", "A B  C d"])
def test_derived_tasks_render_back_to_the_sentence(sentence):
    clean = " ".join(sentence.split())
    chars, tags = derive(clean, "spaces")
    assert " " not in chars and len(chars) == len(tags) and tags[-1] == "_"
    assert render(chars, tags, "spaces") == clean and input_tokens(clean, "spaces") == chars
    chars, tags = derive(clean, "case")
    assert "".join(chars) == "".join(c.lower() if len(c.lower()) == 1 else c for c in clean)
    assert render(chars, tags, "case") == clean  # "İ" has no one-character lower case: it is read as it is
    assert tags.count("U") == sum(c.isupper() and len(c.lower()) == 1 for c in clean)


def test_split_drops_duplicates_keeps_sentences_apart_and_is_reproducible(tmp_path):
    path = tmp_path / "t.txt"
    lines = [f"Sentence number {i % 40} is here.\tSpanish" for i in range(100)]  # 40 distinct, each 2-3 times
    path.write_text("\n".join(lines) + "\n", "utf-8")
    spec = TaggingSpec(str(path), task="case", test_fraction=0.25, val_fraction=0.2, split_seed=3)
    data = load_tagging(spec)
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 10)
    test = {"".join(s) for s in data.test_tokens}
    assert len(test) == 10 and not test & {"".join(s) for s in data.train_tokens}
    again = load_tagging(TaggingSpec(str(path), task="case", test_fraction=0.25, val_fraction=0.2, split_seed=3))
    assert again.test_tokens == data.test_tokens
    assert load_tagging(TaggingSpec(str(path), task="case", max_sentences=20)).test.inputs.__len__() == 2
    path.write_text("Something else.\n" * 3 + "\n".join(lines), "utf-8")
    with pytest.raises(CorpusError, match="changed since the run was trained"):
        load_tagging(spec, data.vocab, data.tags, verify=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"path": ""}, "no data given"),
    ({"task": "pos"}, "unknown --task"),
    ({"test_fraction": 1.0}, "--test-fraction"),
    ({"val_fraction": -0.1}, "--val-fraction"),
    ({"min_count": 0}, "--min-count"),
    ({"max_sentences": -1}, "--max-sentences"),
    ({"token_column": 0}, "--token-column"),
])
def test_spec_errors(tmp_path, kwargs, message):
    with pytest.raises(CorpusError, match=message):
        TaggingSpec(**{"path": str(tmp_path / "x"), **kwargs})


def test_load_errors(tmp_path):
    with pytest.raises(CorpusError, match="is a directory"):
        TaggingSpec(str(tmp_path))
    with pytest.raises(CorpusError, match="does not exist"):
        load_tagging(TaggingSpec(str(tmp_path / "nowhere.txt")))
    one_tag = tmp_path / "one.conll"
    one_tag.write_text("".join(f"w{i}\tNN\n\n" for i in range(30)), "utf-8")
    with pytest.raises(CorpusError, match="one tag only"):
        load_tagging(TaggingSpec(str(one_tag)))
    many = tmp_path / "many.txt"
    many.write_text("".join(f"Sentence {i}.\n" for i in range(20)), "utf-8")
    with pytest.raises(CorpusError, match="--max-sentences 2 leaves no room"):
        load_tagging(TaggingSpec(str(many), task="case", max_sentences=2))
    two = tmp_path / "two.txt"
    two.write_text("One.\nTwo.\n", "utf-8")
    with pytest.raises(CorpusError, match="2 distinct sentence"):
        load_tagging(TaggingSpec(str(two), task="spaces"))


def test_vocab_ids_keep_tokens_as_they_are():
    vocab = TokenVocab(["Dog", "dog", "."], "word")
    assert vocab.ids(["Dog", "dog", "DOG", "."]).tolist() == [2, 3, 1, 4]


def test_a_hash_line_inside_a_sentence_is_a_token_not_a_comment(tmp_path):
    path = tmp_path / "mid.conll"  # a comment comes before a sentence; "#  SYM" after its first token is a token
    path.write_text("# a comment\nIt\tPRP\n#  SYM\n\n", "utf-8")
    assert read_conll(path) == [(["It", "#"], ["PRP", "SYM"])]


def tokens_to_tags(data) -> dict[tuple[str, ...], list[str]]:
    """Every sentence of every split: its tokens -> its tag names (``train_tokens`` is train then validation)."""
    targets = [*data.train.targets, *data.val.targets, *data.test.targets]
    return {tuple(s): [data.tags[t] for t in y]
            for s, y in zip([*data.train_tokens, *data.test_tokens], targets, strict=True)}


def test_a_duplicate_keeps_its_first_occurrence_and_max_sentences_is_exact(tmp_path):
    path = tmp_path / "t.txt"  # "Tom" and "tom" are one sentence to truecasing: the first one's capitals count
    path.write_text("Tom is here.\n" + "".join(f"Line {i}.\n" for i in range(20)) + "tom is here.\n", "utf-8")
    data = load_tagging(TaggingSpec(str(path), task="case"))
    assert len(data.train) + len(data.val) + len(data.test) == 21
    assert tokens_to_tags(data)[tuple("tom is here.")] == list("U-----------")
    for n in (5, 7, 20):
        data = load_tagging(TaggingSpec(str(path), task="case", max_sentences=n, val_fraction=0.25))
        assert len(data.train) + len(data.val) + len(data.test) == n


def test_the_tag_set_is_every_sentence_s_and_the_vocabulary_the_training_part_s(tmp_path):
    path = tmp_path / "v.conll"  # w{i} is in sentence i only; "x" once a sentence, "y" in sentences 0 and 1
    sentences = [[f"w{i}", "x", *(["y"] if i < 2 else [])] for i in range(12)]
    tags = [["N", "V", *(["N"] if i < 2 else [])] for i in range(12)]
    tags[5][0] = "RARE"  # one step of one sentence: in the tag set wherever the split puts it
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(s, g, strict=True)) + "\n"
                            for s, g in zip(sentences, tags, strict=True)), "utf-8")
    placed = set()
    for seed in range(6):
        data = load_tagging(TaggingSpec(str(path), test_fraction=0.25, val_fraction=0.2, split_seed=seed))
        assert data.tags == ["N", "RARE", "V"]
        placed.add("train" if ["w5", "x"] in data.train_tokens[:len(data.train)] else "held out")
        fit = data.train_tokens[:len(data.train)]
        assert data.vocab.tokens == ["<pad>", "<unk>", *sorted({w for s in fit for w in s})]
        twice = load_tagging(TaggingSpec(str(path), test_fraction=0.25, val_fraction=0.2, split_seed=seed,
                                         min_count=2))
        counts = {w: sum(s.count(w) for s in fit) for w in ("x", "y")}
        assert twice.vocab.tokens == ["<pad>", "<unk>", *(w for w in ("x", "y") if counts[w] >= 2)]
    assert placed == {"train", "held out"}  # the rare tag was held out by some split, so the tag set was tested


def test_input_tokens_of_a_conll_run_are_the_whitespace_separated_words():
    assert input_tokens(" The  dog\tbarks ", "conll") == ["The", "dog", "barks"]
    assert render(["The", "dog"], ["DT", "NN"], "conll") == "The/DT dog/NN"
