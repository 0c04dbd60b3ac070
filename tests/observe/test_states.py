"""A placement reads `stopped` only once nothing of it runs."""

from __future__ import annotations

from portal.observe.states import ReplicaObservation, State, summarise


def test_a_stopping_placement_is_not_stopped_while_a_replica_still_answers() -> None:
    stopping = summarise(0, [ReplicaObservation("r0", State.READY), ReplicaObservation("r1", State.STOPPED)])
    assert (stopping.state, stopping.ready, stopping.reason) == (State.READY, 1, "Stopping")
    gone = summarise(0, [ReplicaObservation("r0", State.STOPPED)])
    assert (gone.state, gone.ready) == (State.STOPPED, 0)
    assert summarise(0, []).state is State.STOPPED
