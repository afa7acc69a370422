"""ledger/light.py: sequential header verification with real ed25519 commits and LMDB."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import block as blk
from ledger import codec
from ledger.consensus.messages import Commit, Step, Vote
from ledger.genesis import Genesis
from ledger.keys import SigningKey, sha256
from ledger.light import (
    ForkDetected,
    HeaderRejected,
    LightClient,
    Valset,
    compact_commit,
    encode_update,
    read_update,
    valset_hash,
)

CHAIN = "light-test"
T0 = 1_790_000_000_000
VALS = [SigningKey(bytes([10 + i]) * 32) for i in range(4)]
NEW = SigningKey(b"\x20" * 32)


def _genesis(keys: list[SigningKey] = VALS) -> Genesis:
    return Genesis(
        chain_id=CHAIN,
        genesis_time_ms=T0,
        validators=tuple((k.public_key, 1) for k in keys),
        admins=(VALS[0].public_key,),
        governance_keys=(VALS[0].public_key,),
        governance_threshold=1,
    )


def _valset(keys: list[SigningKey]) -> Valset:
    return tuple(sorted((k.public_key, 1) for k in keys))


class Chain:
    """A header chain signed by real keys (what validators would publish)."""

    def __init__(self, genesis: Genesis) -> None:
        self.prev = genesis.hash
        self.height = 0
        self.time_ms = T0

    def next(
        self,
        signers: list[SigningKey],
        valset: Valset,
        *,
        app_hash: bytes | None = None,
        chain_id: str = CHAIN,
        with_set: bool = False,
    ) -> tuple[bytes, blk.Header]:
        self.height += 1
        self.time_ms += 1000
        header = blk.Header(
            blk.BLOCK_VERSION,
            chain_id,
            self.height,
            self.time_ms,
            self.prev,
            sha256(b"txs%d" % self.height),
            app_hash or sha256(b"app%d" % self.height),
            signers[0].public_key,
            valset_hash(valset),
            sha256(b"lc%d" % self.height),
        )
        votes = [
            Vote(Step.PRECOMMIT, self.height, 0, header.hash, self.time_ms, k.public_key).signed(
                k, chain_id
            )
            for k in signers
        ]
        self.prev = header.hash
        return encode_update(header, Commit.from_votes(votes), valset, with_set), header


@pytest.fixture
def light(tmp_path: Path) -> LightClient:
    return LightClient(tmp_path / "light", _genesis(), durable=False)


def test_a_valid_header_chain_is_accepted_and_stored(light: LightClient) -> None:
    """Headers signed by > 2/3 of the genesis set are verified in order; tip and rows persist."""
    chain = Chain(_genesis())
    headers = []
    for _ in range(5):
        payload, header = chain.next(VALS[:3], _valset(VALS))
        headers.append(header)
        assert [t.height for t in light.offer(read_update(payload))] == [header.height]
    tip = light.latest
    assert (tip.height, tip.hash, tip.app_hash) == (5, headers[-1].hash, headers[-1].app_hash)
    assert light.header(3) is not None
    assert light.header(3).hash == headers[2].hash
    commit = light.commit(5)
    assert commit is not None
    assert len(commit.sigs) == 3


def test_the_tip_survives_a_reopen(tmp_path: Path) -> None:
    """The verified chain is in LMDB: a reopened client continues from its tip."""
    chain = Chain(_genesis())
    client = LightClient(tmp_path / "l", _genesis(), durable=False)
    for _ in range(3):
        client.offer(read_update(chain.next(VALS, _valset(VALS))[0]))
    client.close()
    again = LightClient(tmp_path / "l", _genesis(), durable=False)
    assert again.height == 3
    payload, header = chain.next(VALS, _valset(VALS))
    assert again.offer(read_update(payload))[0].hash == header.hash


def test_a_forged_commit_is_rejected(light: LightClient) -> None:
    """Two of four signers (not > 2/3) or a signature by an outsider do not prove a header."""
    chain = Chain(_genesis())
    payload, _ = chain.next(VALS[:2], _valset(VALS))
    with pytest.raises(HeaderRejected) as exc:
        light.offer(read_update(payload))
    assert exc.value.reason == "bad_commit"
    assert light.height == 0
    # A commit whose signature bytes were swapped for another validator's.
    chain = Chain(_genesis())
    payload, _ = chain.next(VALS[:3], _valset(VALS))
    value = codec.decode(payload)
    value[2][1][0][2], value[2][1][1][2] = value[2][1][1][2], value[2][1][0][2]
    with pytest.raises(HeaderRejected, match="bad_commit"):
        light.offer(read_update(codec.encode(value)))
    assert light.height == 0


def test_a_wrong_validator_set_is_rejected(light: LightClient) -> None:
    """A header naming a set the client does not trust, signed by that set, is refused:
    without the set it is unknown; with it, the trusted set did not vouch (< 1/3 signed)."""
    rogue = [SigningKey(bytes([40 + i]) * 32) for i in range(4)]
    chain = Chain(_genesis())
    payload, _ = chain.next(rogue, _valset(rogue))
    with pytest.raises(HeaderRejected) as exc:
        light.offer(read_update(payload))
    assert exc.value.reason == "unknown_validators"
    payload, _ = Chain(_genesis()).next(rogue, _valset(rogue), with_set=True)
    with pytest.raises(HeaderRejected) as exc:
        light.offer(read_update(payload))
    assert exc.value.reason == "untrusted_set_change"
    assert light.height == 0


def test_a_tampered_app_hash_is_rejected(light: LightClient) -> None:
    """Changing the app hash of a signed header changes its hash: the commit no longer fits."""
    chain = Chain(_genesis())
    payload, _ = chain.next(VALS, _valset(VALS))
    value = codec.decode(payload)
    value[1][3] = sha256(b"a state that was never agreed")
    with pytest.raises(HeaderRejected, match="bad_commit"):
        light.offer(read_update(codec.encode(value)))
    assert light.height == 0


def test_a_header_of_another_chain_is_rejected(light: LightClient) -> None:
    """A header signed for another chain id does not verify here (the id is in the hash)."""
    payload, _ = Chain(_genesis()).next(VALS, _valset(VALS), chain_id="other-chain")
    with pytest.raises(HeaderRejected, match="bad_commit"):
        light.offer(read_update(payload))


def test_a_validator_set_change_is_followed_when_the_old_set_vouches(light: LightClient) -> None:
    """Set {0,1,2,3} -> {0,1,2,NEW}: the first header of the new set carries it and is signed
    by > 2/3 of the new set including > 1/3 of the old; later headers verify under the new one."""
    chain = Chain(_genesis())
    light.offer(read_update(chain.next(VALS, _valset(VALS))[0]))
    new = [*VALS[:3], NEW]
    assert light.offer(read_update(chain.next(new, _valset(new), with_set=True)[0]))
    assert light.offer(read_update(chain.next([NEW, *VALS[:2]], _valset(new))[0]))
    assert light.height == 3
    assert light.latest.validators_hash == valset_hash(_valset(new))


def test_a_gap_is_buffered_and_filled_in_order(light: LightClient) -> None:
    """Headers ahead of the tip wait; the missing one unblocks them all."""
    chain = Chain(_genesis())
    updates = [read_update(chain.next(VALS, _valset(VALS))[0]) for _ in range(4)]
    assert light.offer(updates[2]) == []
    assert light.offer(updates[3]) == []
    assert light.gap == (1, 4)
    assert light.offer(updates[1]) == []
    assert [t.height for t in light.offer(updates[0])] == [1, 2, 3, 4]
    assert light.gap is None


def test_a_conflicting_signed_header_is_a_fork(light: LightClient) -> None:
    """A validly signed second header for a trusted height raises ForkDetected."""
    g = _genesis()
    a, b = Chain(g), Chain(g)
    light.offer(read_update(a.next(VALS, _valset(VALS))[0]))
    light.offer(read_update(a.next(VALS, _valset(VALS))[0]))
    b.next(VALS, _valset(VALS))
    b.prev = light.header(1).hash  # type: ignore[union-attr]
    payload, _ = b.next(VALS, _valset(VALS), app_hash=sha256(b"fork"))
    with pytest.raises(ForkDetected):
        light.offer(read_update(payload))


def test_old_headers_are_pruned(tmp_path: Path) -> None:
    """Only the newest ``keep_headers`` rows stay (plus genesis)."""
    client = LightClient(tmp_path / "l", _genesis(), keep_headers=3, durable=False)
    chain = Chain(_genesis())
    for _ in range(8):
        client.offer(read_update(chain.next(VALS, _valset(VALS))[0]))
    assert client.stored_heights() == 4
    assert client.header(5) is None
    assert client.header(6) is not None
    assert client.header(0)


def test_the_compact_commit_keeps_a_quorum_only() -> None:
    """Four signers of equal power: three signatures (the first quorum) are kept."""
    votes = [Vote(Step.PRECOMMIT, 1, 0, b"h" * 32, T0, k.public_key).signed(k, CHAIN) for k in VALS]
    compact = compact_commit(Commit.from_votes(votes), _valset(VALS))
    assert compact[0] == 0
    assert len(compact[1]) == 3


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=200))
def test_garbage_never_advances_the_client(tmp_path: Path, data: bytes) -> None:
    """Arbitrary bytes on the header channel are refused with HeaderRejected, nothing stored."""
    client = LightClient(tmp_path / "g", _genesis(), durable=False)
    try:
        with pytest.raises(HeaderRejected):
            client.offer(read_update(data))
        assert client.height == 0
    finally:
        client.close()
