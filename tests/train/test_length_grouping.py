"""Length-grouped batching: same records per epoch, less padding, deterministic (so resume stays exact)."""
import random

from vlbridge.train.data import epoch_batches, epoch_order


def padding(batches, lengths):
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)


def test_plain_batches_are_the_shuffled_order_in_chunks():
    lengths = [0] * 103
    order = epoch_order(103, seed=3, epoch=2)
    batches = epoch_batches(lengths, 10, seed=3, epoch=2, group_by_length=False)
    assert batches == [order[i * 10:(i + 1) * 10] for i in range(10)]        # ragged tail of 3 dropped


def test_grouping_keeps_the_records_and_cuts_padding():
    rng = random.Random(0)
    lengths = [rng.randint(200, 350) for _ in range(2000)]
    plain = epoch_batches(lengths, 16, seed=0, epoch=1, group_by_length=False)
    grouped = epoch_batches(lengths, 16, seed=0, epoch=1, group_by_length=True)
    assert sorted(i for b in grouped for i in b) == sorted(i for b in plain for i in b)
    assert all(len(b) == 16 for b in grouped)
    assert padding(grouped, lengths) < 0.2 * padding(plain, lengths)
    # not run short-to-long: batch lengths are shuffled across the epoch
    maxima = [max(lengths[i] for i in b) for b in grouped]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_grouping_is_deterministic_and_differs_by_epoch():
    lengths = [i % 37 for i in range(500)]
    a = epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=True)
    assert a == epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=True)
    assert a != epoch_batches(lengths, 8, seed=1, epoch=1, group_by_length=True)
