"""A partition without a leader yet is asked again; anything else fails at once."""
from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from app.kafka.clients import is_transient, retry_transient


def _error(code: int) -> KafkaException:
    return KafkaException(KafkaError(code))


@pytest.mark.parametrize("code", [KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                                  KafkaError.UNKNOWN_TOPIC_OR_PART])
def test_leader_elections_and_metadata_lag_are_transient(code: int) -> None:
    assert is_transient(_error(code))


def test_what_librdkafka_flags_retriable_is_transient() -> None:
    assert is_transient(KafkaException(KafkaError(KafkaError._TRANSPORT, retriable=True)))


@pytest.mark.parametrize("code", [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.INVALID_CONFIG])
def test_a_refusal_is_not_transient(code: int) -> None:
    assert not is_transient(_error(code))


def test_a_transient_error_is_asked_again_with_a_growing_pause() -> None:
    answers: list[object] = [_error(KafkaError.NOT_LEADER_FOR_PARTITION),
                             _error(KafkaError.LEADER_NOT_AVAILABLE), 42]
    pauses: list[float] = []

    def call() -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, int)
        return answer

    assert retry_transient(call, timeout_s=30, sleep=pauses.append) == 42
    assert pauses == [0.1, 0.2]


def test_a_refusal_is_raised_at_once() -> None:
    calls = []

    def call() -> int:
        calls.append(1)
        raise _error(KafkaError.TOPIC_AUTHORIZATION_FAILED)

    with pytest.raises(KafkaException):
        retry_transient(call, timeout_s=30, sleep=lambda _: None)
    assert len(calls) == 1


def test_a_transient_error_past_the_timeout_is_raised() -> None:
    def call() -> int:
        raise _error(KafkaError.NOT_LEADER_FOR_PARTITION)

    with pytest.raises(KafkaException) as raised:
        retry_transient(call, timeout_s=0.0, sleep=lambda _: None)
    assert raised.value.args[0].code() == KafkaError.NOT_LEADER_FOR_PARTITION


def test_watermarks_ask_a_partition_without_a_leader_again(monkeypatch) -> None:
    import app.kafka.clients as clients

    class Consumer:
        calls = 0

        def get_watermark_offsets(self, tp, timeout: float) -> tuple[int, int]:
            Consumer.calls += 1
            if Consumer.calls == 1:
                raise _error(KafkaError.NOT_LEADER_FOR_PARTITION)
            assert (tp.topic, tp.partition, timeout) == ("t", 3, 10)
            return 2, 7

    monkeypatch.setattr(clients.time, "sleep", lambda _: None)
    assert clients.watermarks(Consumer(), "t", 3) == (2, 7)  # type: ignore[arg-type]
    assert Consumer.calls == 2
