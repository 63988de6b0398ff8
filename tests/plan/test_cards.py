"""The cards `--gpu` names, the sizes `--gpu-memory` and `--headroom` read, and their one-line errors."""

from __future__ import annotations

import pytest

from bench.plan.cards import CARDS, DEFAULT_HEADROOM, GIB, MIB, SizeError, card, parse_headroom, parse_size


def test_the_cards_the_brief_names_with_their_memory_as_sold() -> None:
    sold = {"rtx4090": 24, "l4": 24, "a100-40g": 40, "a100-80g": 80, "h100": 80, "h200": 141}
    assert {name: c.memory_bytes for name, c in CARDS.items()} == {name: gib * GIB for name, gib in sold.items()}
    assert card("H100") is CARDS["h100"] and card(" rtx4090 ") is CARDS["rtx4090"]


def test_an_unknown_card_names_the_choices() -> None:
    with pytest.raises(SizeError) as error:
        card("rtx5090")
    assert str(error.value) == f"unknown --gpu 'rtx5090'; valid choices: {', '.join(CARDS)}"


@pytest.mark.parametrize(("gpu_name", "name"), [
    ("NVIDIA GeForce RTX 4090", "rtx4090"), ("NVIDIA L4", "l4"), ("NVIDIA A100-SXM4-40GB", "a100-40g"),
    ("NVIDIA A100-PCIE-40GB", "a100-40g"), ("NVIDIA A100-SXM4-80GB", "a100-80g"), ("NVIDIA A100 80GB PCIe", "a100-80g"),
    ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H100 PCIe", "h100"), ("NVIDIA H200", "h200")])
def test_each_card_matches_its_cuda_names_and_no_other_cards(gpu_name: str, name: str) -> None:
    """The `hw/gpu` tag (torch.cuda.get_device_name) calibrates only the card it is."""
    assert [c.name for c in CARDS.values() if c.matches(gpu_name)] == [name]


@pytest.mark.parametrize("gpu_name", ["NVIDIA L40S", "NVIDIA L40", "NVIDIA H100 NVL", "NVIDIA GeForce RTX 3090", ""])
def test_other_gpus_match_no_card(gpu_name: str) -> None:
    assert not any(c.matches(gpu_name) for c in CARDS.values())


@pytest.mark.parametrize(("text", "expected"), [
    ("24GiB", 24 * GIB), ("24GB", 24 * GIB), ("80 GiB", 80 * GIB), ("512MiB", 512 * MIB), ("512mb", 512 * MIB),
    ("1.5GiB", 3 * GIB // 2), (" 141GB ", 141 * GIB)])
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["24", "24TB", "GiB", "lots", "0GiB", "24 G", "-1GiB", "1e3GiB"])
def test_a_bad_size_is_one_clear_error(text: str) -> None:
    with pytest.raises(SizeError) as error:
        parse_size(text)
    assert str(error.value) == (f"--gpu-memory={text!r} is not a size; write a positive number and GiB, GB, MiB or "
                                "MB (e.g. 24GiB, 80GB, 512MiB)")


def test_headroom_is_a_share_or_a_size() -> None:
    assert DEFAULT_HEADROOM == "10%" and parse_headroom(DEFAULT_HEADROOM, 24 * GIB) == int(24 * GIB * 0.1)
    assert parse_headroom("0%", 24 * GIB) == 0 and parse_headroom("12.5%", 80 * GIB) == 10 * GIB
    assert parse_headroom("2GiB", 24 * GIB) == 2 * GIB


@pytest.mark.parametrize("text", ["100%", "-5%", "much%", "24GiB", "30GB", "ten"])
def test_a_bad_headroom_is_one_clear_error(text: str) -> None:
    with pytest.raises(SizeError) as error:
        parse_headroom(text, 24 * GIB)
    assert text in str(error.value) and "\n" not in str(error.value)
