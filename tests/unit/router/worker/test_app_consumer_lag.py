"""Consumer lag sampling: end offset minus the next offset to read, per partition."""

from faust.types import TP

from router.metrics import REGISTRY
from router.worker.app import sample_consumer_lag


class Consumer:
    """The part of faust's consumer the sampler reads."""

    def __init__(self) -> None:
        self._read_offset = {TP("ev", 0): 99, TP("ev", 1): None, TP("other", 0): 5}
        self.ends = {TP("ev", 0): 150, TP("ev", 1): 40, TP("other", 0): 500}

    def assignment(self) -> set[TP]:
        return set(self.ends)

    def highwater(self, tp: TP) -> int:
        return self.ends[tp]


def test_lag_per_partition_of_the_consumed_topics_only() -> None:
    sample_consumer_lag(Consumer(), ("ev",))
    get = REGISTRY.get_sample_value
    assert get("leadrouter_consumer_lag_messages", {"topic": "ev", "partition": "0"}) == 50
    assert get("leadrouter_consumer_lag_messages", {"topic": "ev", "partition": "1"}) == 40
    assert get("leadrouter_consumer_lag_messages", {"topic": "other", "partition": "0"}) is None
