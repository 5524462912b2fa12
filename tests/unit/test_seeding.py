"""`stable_seed`: the one seed derivation shared by the data engine, online training and the scripted user."""

from __future__ import annotations

from collab.seeding import stable_seed


def test_stable_seed_is_crc32_of_the_parts_joined_by_a_unit_separator() -> None:
    # Pinned: data generation, online training and the simulated user's wording all depend on these values.
    assert stable_seed(3, "apples-1", 2) == 2677779104
    assert stable_seed(0, "apples") == 2960617919


def test_stable_seed_fits_in_32_bits_and_separates_its_parts() -> None:
    assert 0 <= stable_seed("x" * 1000, 10**30) < 2**32
    assert stable_seed("a", "bc") != stable_seed("ab", "c")
