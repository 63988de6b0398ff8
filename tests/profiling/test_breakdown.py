"""The split of a profile into categories, on events made by hand (the rules one by one) and on real models (which
modules each technique's layers are scoped as)."""

from __future__ import annotations

import pytest

from bench.measure.profile.breakdown import BACKWARD_ROOT, STEP_END, Event, categorise, count, split
from bench.measure.profile.categories import CATEGORIES, module_categories


def test_backward_ops_are_charged_to_the_forward_op_that_recorded_them() -> None:
    events = [Event("bench::adapter", 100, sequence_nr=-1, thread=1),
              Event("aten::mm", 50, parent=0, sequence_nr=7, thread=1),
              Event("bench::base_matmul", 10, thread=1), Event("aten::addmm", 40, parent=2, sequence_nr=8, thread=1),
              Event(f"{BACKWARD_ROOT}MmBackward0", 5, sequence_nr=7, thread=1, forward_thread=1),
              Event("aten::mm", 60, parent=4, thread=1),
              Event(f"{BACKWARD_ROOT}AddmmBackward0", 5, sequence_nr=8, thread=1, forward_thread=1),
              Event(f"{BACKWARD_ROOT}torch::autograd::AccumulateGrad", 3, thread=1)]
    assert categorise(events) == ["adapter", "adapter", "base_matmul", "base_matmul", "adapter", "adapter",
                                  "base_matmul", "other"]


def test_dequantization_is_found_by_name_in_any_scope_and_in_backward() -> None:
    """QLoRA's backward dequantizes the 4-bit weight again, inside MatMul4Bit's backward."""
    events = [Event("bench::base_matmul", 10, thread=1),
              Event("bitsandbytes::dequantize_4bit", 70, parent=0, sequence_nr=3, thread=1),
              Event("aten::linear", 20, parent=0, sequence_nr=4, thread=1),
              Event(f"{BACKWARD_ROOT}MatMul4BitBackward", 5, sequence_nr=4, thread=1, forward_thread=1),
              Event("bitsandbytes::dequantize_4bit", 65, parent=3, thread=1),
              Event("aten::mm", 25, parent=3, thread=1)]
    assert categorise(events) == ["base_matmul", "dequant", "base_matmul", "base_matmul", "dequant", "base_matmul"]


def test_the_uncovered_window_is_host_work_and_other_threads_are_not_the_step() -> None:
    events = [Event("bench::attention", 1000, thread=1), Event("bench::optimizer", 500, thread=1),
              Event("aten::empty", 9999, thread=2)]  # a sampler thread's query: not the step's time
    per_step = split(count(events, window_us=4000, steps=2))
    assert set(per_step) == set(CATEGORIES)
    assert per_step["attention"] == 0.5 and per_step["optimizer"] == 0.25
    assert per_step["data_host"] == pytest.approx(1.25)  # 4 ms window - 1.5 ms covered, over 2 steps
    assert sum(per_step.values()) == pytest.approx(2.0)


@pytest.mark.parametrize("technique", ["lora", "dora"])
def test_peft_layers_are_scoped_as_adapter_base_and_attention(technique: str) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=64, vocab_size=50))
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["query", "value"], use_dora=technique == "dora"))
    scoped = module_categories(model)
    query = "base_model.model.bert.encoder.layer.0.attention.self.query"
    assert scoped[query] == "adapter" and scoped[f"{query}.base_layer"] == "base_matmul"
    assert scoped[f"{query}.lora_A.default"] == scoped[f"{query}.lora_B.default"] == "adapter"
    if technique == "dora":
        assert scoped[f"{query}.lora_magnitude_vector.default"] == "adapter"
    assert scoped["base_model.model.bert.encoder.layer.0.attention.self"] == "attention"
    assert "base_model.model.bert.encoder.layer.0.attention" not in scoped  # it holds the output dense and norm
    assert scoped["base_model.model.bert.encoder.layer.0.attention.output.dense"] == "base_matmul"
    assert scoped[""] == "other"


def test_step_end_markers_split_the_window_and_left_out_steps_are_dropped() -> None:
    """Three steps of 10 ms told apart by the markers; the first (the profiler's warm-up) and a watched one are
    left out, so the figures are the one step that counts."""
    events = [Event("bench::attention", 9000, thread=1, start_us=100), Event(STEP_END, 0, thread=1, start_us=10_000),
              Event("bench::attention", 4000, thread=1, start_us=10_100), Event(STEP_END, 0, thread=1, start_us=20_000),
              Event("bench::attention", 7000, thread=1, start_us=20_100), Event(STEP_END, 0, thread=1, start_us=30_000)]
    assert split(count(events, window_us=30_000, steps=3, left_out=frozenset({0, 2}))) == pytest.approx(
        {**dict.fromkeys(CATEGORIES, 0.0), "attention": 4.0, "data_host": 6.0})
    whole = split(count(events, window_us=30_000, steps=3))  # nothing left out: the mean of the three
    assert whole["attention"] == pytest.approx(20 / 3) and sum(whole.values()) == pytest.approx(10.0)


def test_a_backward_node_belongs_to_the_last_op_that_recorded_its_sequence_number() -> None:
    """A cast at the end of a 4-bit layer makes no node but records the number GELU's node then takes; a custom
    Function's inner ops record its number too. Each backward goes to the op that made the node."""
    events = [Event("bench::base_matmul", 10, thread=1),
              Event("MatMul4Bit", 5, parent=0, sequence_nr=7, thread=1),
              Event("bitsandbytes::dequantize_4bit", 50, parent=1, sequence_nr=7, thread=1),
              Event("aten::linear", 30, parent=1, sequence_nr=7, thread=1),
              Event("aten::to", 1, parent=0, sequence_nr=8, thread=1),  # no node: 8 goes to gelu
              Event("aten::gelu", 20, sequence_nr=8, thread=1),
              Event(f"{BACKWARD_ROOT}GeluBackward0", 1, sequence_nr=8, thread=1, forward_thread=1),
              Event(f"{BACKWARD_ROOT}MatMul4BitBackward", 1, sequence_nr=7, thread=1, forward_thread=1)]
    assert categorise(events)[6:] == ["other", "base_matmul"]
