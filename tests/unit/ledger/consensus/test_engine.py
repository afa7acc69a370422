"""The engine's input filter: what it drops (and counts), buffers, and re-publishes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.consensus import wire
from ledger.consensus.clock import VirtualClock
from ledger.consensus.engine import Engine, EngineConfig
from ledger.consensus.messages import Proposal, Step, Vote
from ledger.consensus.privval import SignState
from ledger.consensus.simapp import SimApp
from ledger.consensus.wal import ConsensusStore
from ledger.keys import SigningKey, sha256
from tests.unit.ledger.consensus.helpers import CHAIN, KEYS, PKS, T

Sent = list[tuple[str, bytes, str | None]]


def _engine(tmp_path: Path, me: int | None = 0) -> tuple[Engine, Sent, VirtualClock]:
    clock = VirtualClock()
    sent: Sent = []
    app = SimApp(CHAIN, dict.fromkeys(PKS[:4], 1))
    key = KEYS[me] if me is not None else None
    engine = Engine(
        EngineConfig(CHAIN, timeouts=T, heartbeat_ms=60_000, republish_ms=1000),
        app,
        clock,
        lambda c, p, to: sent.append((c, p, to)),
        ConsensusStore(tmp_path / "cs", durable=False),
        key=key,
        sign_state=SignState(tmp_path / "pv", durable=False) if key else None,
    )
    engine.start()
    return engine, sent, clock


def _vote_payload(i: int, height: int = 1, rnd: int = 0, chain: str = CHAIN) -> bytes:
    key = KEYS[i] if i < len(KEYS) else SigningKey(sha256(b"stranger"))
    v = Vote(Step.PREVOTE, height, rnd, None, 5, key.public_key).signed(key, chain)
    return wire.encode_vote(chain, v)


def test_bad_inputs_are_dropped_and_counted_by_reason(tmp_path: Path) -> None:
    """Wrong chain, stranger, bad signature, junk, duplicate and old height are counted."""
    engine, _, _ = _engine(tmp_path)
    good = _vote_payload(1)
    engine.receive("consensus", "x", good)
    engine.receive("consensus", "x", good)
    engine.receive("consensus", "x", _vote_payload(2, chain="other"))
    engine.receive("consensus", "x", _vote_payload(5))
    engine.receive("consensus", "x", b"\x93junk")
    body = wire.decode(CHAIN, _vote_payload(3))
    assert isinstance(body, Vote)
    forged = wire.encode_vote(CHAIN, Vote(Step.PREVOTE, 1, 0, None, 6, PKS[3], body.signature))
    engine.receive("consensus", "x", forged)
    s = engine.stats
    assert (s["duplicate"], s["wrong_chain"], s["not_validator"]) == (1, 1, 1)
    assert (s["malformed"], s["bad_signature"]) == (1, 1)
    assert engine.core.votes(0, Step.PREVOTE).total == 1


def test_future_heights_are_buffered_within_a_window(tmp_path: Path) -> None:
    """Messages for h+1..h+2 wait in a bounded buffer; further ones are dropped."""
    engine, sent, _ = _engine(tmp_path)
    engine.receive("consensus", "x", _vote_payload(1, height=2))
    engine.receive("consensus", "x", _vote_payload(1, height=9))
    assert engine.stats["far_future"] == 1
    assert sum(len(v) for v in engine._future.values()) == 1
    assert [c for c, _, _ in sent] == ["sync_req"]


def test_member_ignores_votes_and_validator_waits_for_transactions(tmp_path: Path) -> None:
    """A member never processes votes; an idle validator publishes nothing until the heartbeat."""
    member, msent, _ = _engine(tmp_path / "m", me=None)
    member.receive("consensus", "x", _vote_payload(1))
    assert member.stats["not_validating"] == 1
    engine, sent, clock = _engine(tmp_path / "v", me=0)
    clock.run_until(clock.now_ms() + 59_000)
    assert [c for c, _, _ in sent] == ["sync_req"] * 3  # start-up probes, then silence
    assert not engine.core.started
    clock.run_until(clock.now_ms() + 2_000)
    assert engine.core.started
    assert [c for c, _, _ in msent] == ["sync_req"]  # its own clock never advanced here


def test_own_votes_are_republished_while_the_height_is_open(tmp_path: Path) -> None:
    """A lost vote only delays: the validator re-sends its latest-round messages periodically."""
    engine, sent, clock = _engine(tmp_path, me=3)
    engine.app.add_tx(b"tx")  # type: ignore[attr-defined]
    engine.notify_tx()
    clock.run_until(clock.now_ms() + 2_500)  # propose timeout → own nil prevote, then republish
    own = [p for c, p, _ in sent if c == "consensus"]
    assert len(own) >= 2
    assert own[-1] == own[0]
    assert engine.stats["republished"] >= 1


def test_signing_key_requires_a_sign_state(tmp_path: Path) -> None:
    """An engine with a key but no sign-state is refused at construction."""
    with pytest.raises(Exception, match="sign-state"):
        Engine(
            EngineConfig(CHAIN),
            SimApp(CHAIN, {PKS[0]: 1}),
            VirtualClock(),
            lambda c, p, t: None,
            ConsensusStore(tmp_path),
            key=KEYS[0],
        )


def test_replay_stops_when_the_wal_already_decides(tmp_path: Path) -> None:
    """A WAL holding a full decision replays into a commit; later records of that height (a
    stale timeout) never reach the next height's core."""
    engine, _, clock = _engine(tmp_path, me=0)
    app = engine.app
    block = app.prepare_block(1, None, 1)
    block_hash = sha256(block)
    vs = engine.valset
    i = PKS.index(vs.proposer(0))
    p = Proposal(1, 0, -1, block_hash, 5, PKS[i], block).signed(KEYS[i], CHAIN)
    engine.store.wal_append(1, ["start"], sync=True)
    engine.store.wal_append(1, ["msg", wire.encode_proposal(CHAIN, p)], sync=True)
    for j in (1, 2, 3):
        v = Vote(Step.PRECOMMIT, 1, 0, block_hash, 5, PKS[j]).signed(KEYS[j], CHAIN)
        engine.store.wal_append(1, ["msg", wire.encode_vote(CHAIN, v)], sync=True)
    engine.store.wal_append(1, ["timeout", int(Step.PRECOMMIT), 0], sync=True)
    engine.stop()
    again = Engine(
        EngineConfig(CHAIN, timeouts=T),
        app,
        clock,
        lambda c, p, t: None,
        engine.store,
        key=KEYS[0],
        sign_state=SignState(tmp_path / "pv2", durable=False),
    )
    app.add_tx(b"next")  # type: ignore[attr-defined]  # height 2 starts at once, in round 0
    again.start()
    assert app.height() == 1
    assert again.height == 2
    assert again.core.round == 0  # the stale round-0 precommit timeout did not start round 1


def test_sync_requests_repeat_while_peers_are_known_ahead(tmp_path: Path) -> None:
    """A verified vote of a later height makes the node ask for blocks, and ask again every
    sync_retry_ms while still behind; a forged one (bad signature) triggers nothing."""
    engine, sent, clock = _engine(tmp_path / "a", me=0)
    engine.receive("consensus", "x", _vote_payload(1, height=3))
    clock.run_until(clock.now_ms() + 10_000)
    assert [c for c, _, _ in sent].count("sync_req") >= 6  # every 2 s while behind
    engine2, sent2, clock2 = _engine(tmp_path / "b", me=0)
    good = wire.decode(CHAIN, _vote_payload(1, height=3))
    assert isinstance(good, Vote)
    forged = Vote(Step.PREVOTE, 3, 0, None, 99, PKS[1], good.signature)
    engine2.receive("consensus", "x", wire.encode_vote(CHAIN, forged))
    clock2.run_until(clock2.now_ms() + 10_000)
    assert [c for c, _, _ in sent2].count("sync_req") == 3  # the start-up probes only
    assert engine2.stats["bad_signature"] == 1


def test_open_height_asks_for_blocks_only_when_no_peer_is_heard_on_it(tmp_path: Path) -> None:
    """Re-publication asks for blocks while the open height is silent (peers may have decided
    it long ago), but not while a peer's verified messages of this height keep arriving:
    under load every height outlives a period and the answers are whole blocks."""
    counts = []
    for talk in (False, True):
        engine, sent, clock = _engine(tmp_path / str(talk), me=3)
        engine.app.add_tx(b"tx")  # type: ignore[attr-defined]
        engine.notify_tx()
        start = clock.now_ms()
        for step in range(1, 21):  # 10 s in steps of 0.5 s
            if talk:
                engine.receive("consensus", "v1", _vote_payload(1, height=1, rnd=step))
            clock.run_until(start + step * 500)
        counts.append([c for c, _, _ in sent].count("sync_req"))
        if talk:
            assert engine.stats["sync_request_skipped"] >= 4
    silent, talking = counts
    assert talking < silent
    assert talking <= 3  # the start-up probes only
