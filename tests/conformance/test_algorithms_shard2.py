"""Conformance: registered algorithms × variants on users' own inputs
(shard 2 of shards.COUNT)."""

import shards

test_conforms, test_conforms_on_every_setup = shards.make_tests(2)
