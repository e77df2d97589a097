"""builtin:sentiment-domains: VADER words in dictionary spelling (source) and other words in social-media spelling
(target), split by word so the target test asks about words the source never saw."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from hftl.builtin import resolve_builtin, write_sentiment_domains
from hftl.builtin.sentiment_domains import polar_words, social_spellings
from hftl.utils.errors import HftlError
from tests.conftest import require

FILES = ("dictionary-train.csv", "social-train.csv", "social-test.csv")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("vaderSentiment")
    return write_sentiment_domains(tmp_path_factory.mktemp("sd") / "sentiment-domains")


def rows(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["text", "label"]
        return [(row["text"], row["label"]) for row in reader]


def test_the_words_are_split_disjoint_whole_and_stratified(folder: Path) -> None:
    words = polar_words()
    source = dict(rows(folder / "dictionary-train.csv"))
    spelled = social_spellings(sorted(words.keys() - source.keys()), taken=set(words))
    word_of = {text: word for word, text in spelled.items()}
    train, test = ({word_of[t]: label for t, label in rows(folder / name)} for name in FILES[1:])
    assert not source.keys() & train.keys() and not source.keys() & test.keys() and not train.keys() & test.keys()
    assert source.keys() | train.keys() | test.keys() == words.keys()
    assert all(words[w] == label for part in (source, train, test) for w, label in part.items())  # labels kept
    share = sum(label == "positive" for label in words.values()) / len(words)
    for part in (source, train, test):  # each part has the lexicon's share of positive words
        assert abs(sum(label == "positive" for label in part.values()) / len(part) - share) < 0.01
    assert len(source) == pytest.approx(len(words) / 2, abs=2) and abs(len(train) - len(test)) <= 2


def test_every_social_text_is_a_social_spelling_unlike_any_lexicon_word(folder: Path) -> None:
    words = polar_words()
    texts = [text for name in FILES[1:] for text, _ in rows(folder / name)]
    assert len(set(texts)) == len(texts) and not set(texts) & words.keys()
    assert all(re.fullmatch(r"[a-z]{2,}(-[a-z]+)*", w) for w, _ in rows(folder / "dictionary-train.csv"))
    # The mix: each style on a fair share of the words.
    styles = {
        "hashtag": lambda t: t.startswith("#"),
        "exclaimed": lambda t: t.endswith("!!"),
        "caps": lambda t: t.strip("#!").isupper(),
        "stretched": lambda t: re.search(r"(.)\1\1", t.lower()) is not None,
        "no vowels": lambda t: len(t.strip("#!")) > 3 and not re.search(r"[aeiou]", t.strip("#!").lower()[1:]),
    }
    for style, has in styles.items():
        assert sum(map(has, texts)) > 0.1 * len(texts), style


def test_spellings_are_stable_and_files_rewritten_only_when_changed(folder: Path, tmp_path: Path) -> None:
    again = write_sentiment_domains(tmp_path / "again")
    assert all((folder / name).read_bytes() == (again / name).read_bytes() for name in FILES)
    stamps = {name: (again / name).stat().st_mtime_ns for name in FILES}
    write_sentiment_domains(again)
    assert {name: (again / name).stat().st_mtime_ns for name in FILES} == stamps
    assert social_spellings(["good", "thanks"], seed=3) == social_spellings(["thanks", "good"], seed=3)
    other = write_sentiment_domains(tmp_path / "other", seed=1)
    assert (other / "dictionary-train.csv").read_text() != (folder / "dictionary-train.csv").read_text()
    with pytest.raises(HftlError, match="source_fraction"):
        write_sentiment_domains(tmp_path / "bad", source_fraction=1.0)


def test_a_model_of_dictionary_words_reads_social_spellings_worse(folder: Path) -> None:
    # The shift is real: character n-grams learnt on dictionary words score the held-out words lower when they are
    # written the social way than when they are written as in the dictionary.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    words = polar_words()
    source = rows(folder / "dictionary-train.csv")
    model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)), LogisticRegression(max_iter=1000))
    model.fit(*zip(*source))
    social = rows(folder / "social-test.csv")
    spelled = social_spellings(sorted(words.keys() - dict(source).keys()), taken=set(words))
    word_of = {text: word for word, text in spelled.items()}
    as_dictionary = model.score([word_of[t] for t, _ in social], [label for _, label in social])
    as_social = model.score(*zip(*social))
    assert as_dictionary > 0.75 and 0.5 < as_social < as_dictionary - 0.08, (as_social, as_dictionary)


def test_resolve_builtin_picks_a_file_inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require("vaderSentiment")
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / ".cache/hftl/data/sentiment-domains"
    assert resolve_builtin("builtin:sentiment-domains/social-test.csv") == str(folder / "social-test.csv")
    assert resolve_builtin("builtin:sentiment-domains") == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    with pytest.raises(HftlError, match=r"no 'test\.csv' inside .*dictionary-train\.csv, social-test\.csv"):
        resolve_builtin("builtin:sentiment-domains/test.csv")
