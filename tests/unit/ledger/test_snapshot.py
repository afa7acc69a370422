"""State snapshots (docs/spec/consensus.md §5b): manifest and chunk verification, the server's
answers, and restore on real LMDB stores."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec, merkle
from ledger.errors import StoreError
from ledger.snapshot import (
    N_CHUNKS,
    PIECE_BYTES,
    SnapshotError,
    SnapshotServer,
    decode,
    make_chunk_request,
    make_request,
    manifest_root,
    verify_chunk,
)
from ledger.store import Store
from ledger.transport.base import Message
from ledger.verify import verify_store
from tests.unit.ledger.helpers import (
    ADMIN,
    CHAIN,
    N1,
    OUTSIDER,
    VAL,
    Signer,
    commit,
    genesis,
    open_app,
)

Entries = list[tuple[bytes, bytes]]


def _all_entries(store: Store) -> tuple[int, list[bytes], list[Entries]]:
    """(height, manifest, entries per chunk) read through a state view, piece by piece."""
    view = store.view()
    try:
        roots = view.partition_roots()
        chunks: list[Entries] = []
        for c in range(N_CHUNKS):
            entries: Entries = []
            after, more = b"", True
            while more:
                piece, more = view.entries(c, after, 300)
                entries += piece
                after = piece[-1][0] if piece else after
            chunks.append(entries)
        return view.height, roots, chunks
    finally:
        view.close()


def _app_with_meters(path: Path, n: int):  # type: ignore[no-untyped-def]
    app = open_app(path)
    admin = Signer(ADMIN)
    t = app.last_block_time_ms
    txs = [admin("AddMeter", {"meter_id": f"M{i}", "account": VAL.public_key}) for i in range(n)]
    commit(app, txs, t + 1000)
    return app


def test_manifest_folds_to_the_app_hash_and_chunks_to_their_roots(tmp_path: Path) -> None:
    """The 64 chunk roots fold to the store's app hash; every chunk's entries, read in small
    pieces, give its root; together they are exactly the state."""
    app = _app_with_meters(tmp_path, 40)
    height, roots, chunks = _all_entries(app.store)
    assert height == app.height
    assert manifest_root(roots) == app.app_hash
    for c, entries in enumerate(chunks):
        verify_chunk(height, c, entries, roots)
    with app.store.state_reader() as base:
        everything = sorted(base.scan(b"", b"\xff"))
    assert sorted(e for chunk in chunks for e in chunk) == everything


def test_tampered_chunk_and_manifest_are_refused_by_name(tmp_path: Path) -> None:
    """A changed value, a dropped or a foreign entry fails its chunk with an error naming the
    chunk and height; a changed root does not fold to the app hash."""
    app = _app_with_meters(tmp_path, 40)
    height, roots, chunks = _all_entries(app.store)
    c = next(i for i, entries in enumerate(chunks) if len(entries) >= 2)
    key, value = chunks[c][0]
    with pytest.raises(SnapshotError, match=f"chunk {c} of the snapshot at height {height}"):
        verify_chunk(height, c, [(key, value + b"x"), *chunks[c][1:]], roots)
    with pytest.raises(SnapshotError, match=f"chunk {c} of"):
        verify_chunk(height, c, chunks[c][1:], roots)
    other = (c + 1) % N_CHUNKS
    with pytest.raises(SnapshotError, match=f"chunk {other}: key"):
        verify_chunk(height, other, chunks[c], roots)
    with pytest.raises(SnapshotError, match=f"chunk {c}: entries out of"):
        verify_chunk(height, c, list(reversed(chunks[c])), roots)
    forged = [*roots]
    forged[3] = bytes(32)
    assert manifest_root(forged) != app.app_hash
    with pytest.raises(SnapshotError, match="manifest"):
        manifest_root(roots[:-1])


@settings(max_examples=15, deadline=None)
@given(
    st.dictionaries(
        st.binary(min_size=1, max_size=24).filter(lambda k: not k.startswith(b"cfg/")),
        st.binary(max_size=64),
        max_size=60,
    )
)
def test_restore_gives_the_same_app_hash_and_proofs(extra: dict[bytes, bytes]) -> None:
    """A snapshot taken at H and restored into an empty store gives the same app hash, the
    same state and identical prove() results for every key."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Store(Path(tmp) / "a", genesis(), durable=False)
        block = _empty_block(source)
        source.commit(block, block.encode(), None, dict(extra))
        height, roots, chunks = _all_entries(source)
        target = Store(Path(tmp) / "b", genesis(), durable=False)
        entries = [e for chunk in chunks for e in chunk]
        target.restore(
            (height, source.last_block_hash, source.last_time_ms, manifest_root(roots)), entries
        )
        assert target.app_hash == source.app_hash
        assert (target.height, target.last_block_hash) == (height, source.last_block_hash)
        for key, _ in entries:
            assert target.prove(key) == source.prove(key)
        source.close()
        target.close()
        again = Store(Path(tmp) / "b", genesis(), durable=False)  # reopens: roots match tip
        assert again.app_hash == manifest_root(roots)
        again.close()


def _empty_block(store: Store):  # type: ignore[no-untyped-def]
    from ledger import block as blk

    header = blk.Header(
        blk.BLOCK_VERSION,
        store.genesis.chain_id,
        store.height + 1,
        store.last_time_ms + 1,
        store.last_block_hash,
        blk.txs_hash([]),
        store.app_hash,
        VAL.public_key,
        bytes(32),
        blk.commit_hash(None),
    )
    return blk.Block(header, (), None)


def test_restore_refuses_entries_that_miss_the_app_hash(tmp_path: Path) -> None:
    """Entries that do not give the claimed app hash leave the target store untouched."""
    app = _app_with_meters(tmp_path / "a", 5)
    height, _, chunks = _all_entries(app.store)
    target = Store(tmp_path / "b", genesis(), durable=False)
    before = target.app_hash
    entries = [e for chunk in chunks for e in chunk][1:]
    with pytest.raises(StoreError, match="entries give app hash"):
        target.restore((height, app.last_block_hash, 1, app.app_hash), entries)
    assert (target.height, target.app_hash) == (0, before)


class _Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str | None]] = []

    def __call__(self, channel: str, payload: bytes, to: str | None) -> None:
        self.sent.append((channel, payload, to))


def _server(tmp_path: Path) -> tuple[SnapshotServer, _Outbox, int]:
    app = _app_with_meters(tmp_path, 200)
    out = _Outbox()
    clock = [1_000_000]
    server = SnapshotServer(app.store, VAL, out, wall_ms=lambda: clock[0])
    server.on_commit()  # candidate at this height
    commit(
        app,
        [Signer(ADMIN, app=app)("AddMeter", {"meter_id": "X", "account": N1.public_key})],
        app.last_block_time_ms + 1,
    )
    server.on_commit()  # the previous view is now servable
    return server, out, app.height - 1


def test_server_answers_the_admin_one_view_in_bounded_pieces(tmp_path: Path) -> None:
    """The validator answers the admin's signed request with the manifest of the view before
    its last commit, then chunk pieces of at most PIECE_BYTES to that node only; an outsider and
    a prosumer get 'snap_none' (Fig. 4: only the admin reads every member's measurements), a bad
    signature and a chunk request without a session get nothing."""
    server, out, served = _server(tmp_path)
    assert server.served_height == served
    server.handle(Message("sync_req", "m1", make_request(ADMIN, CHAIN, "m1", 1_000_001)))
    channel, payload, to = out.sent[-1]
    manifest = decode(CHAIN, payload)
    assert (channel, to, manifest[0], manifest[3]) == ("sync_resp", "m1", "snap_manifest", served)
    assert len(manifest[4]) == N_CHUNKS
    server.handle(Message("sync_req", "m1", make_chunk_request(CHAIN, served, 0, b"", 7)))
    piece = decode(CHAIN, out.sent[-1][1])
    assert (piece[0], piece[5]) == ("snap_chunk", 7)
    assert sum(len(k) + len(v) for k, v in piece[6]) <= PIECE_BYTES
    n = len(out.sent)
    server.handle(Message("sync_req", "m2", make_chunk_request(CHAIN, served, 0, b"", 8)))
    assert len(out.sent) == n  # m2 has no session
    for i, refused in enumerate((OUTSIDER, N1)):  # N1 is a prosumer: Fig. 4 refuses it too
        nonce = 1_000_002 + i
        server.handle(Message("sync_req", "o", make_request(refused, CHAIN, "o", nonce)))
        assert decode(CHAIN, out.sent[-1][1])[:4] == ["snap_none", CHAIN, nonce, "not_permitted"]
    forged = codec.decode(make_request(ADMIN, CHAIN, "m1", 1_000_003))
    forged[3] = bytes(64)
    server.handle(Message("sync_req", "m1", codec.encode(forged)))
    assert server.stats["refused_SignatureError"] == 1
    server.handle(Message("sync_req", "m1", make_request(ADMIN, CHAIN, "m1", 1_000_001)))
    assert server.stats["refused_ValueError"] == 1  # replayed nonce
    server.close()


def test_view_is_consistent_while_the_node_commits(tmp_path: Path) -> None:
    """A view keeps showing the state of its height while later blocks commit."""
    app = _app_with_meters(tmp_path, 3)
    view = app.store.view()
    height, app_hash = app.height, app.app_hash
    commit(
        app,
        [Signer(ADMIN, app=app)("AddMeter", {"meter_id": "Y", "account": VAL.public_key})],
        app.last_block_time_ms + 1,
    )
    assert app.app_hash != app_hash
    assert view.height == height
    assert merkle.app_hash(view.partition_roots()) == app_hash
    view.close()


def test_restored_validator_stays_silent_on_headers_it_never_had(tmp_path: Path) -> None:
    """A validator restored from a snapshot at S answers a headers request for heights up to S
    with nothing (the member then asks another one instead of spinning on empty answers) and a
    request beyond its tip with the usual empty answer; ledger verify says why it cannot
    replay."""
    from ledger.app import App
    from ledger.proofs import ProofService, make_headers_request

    app = _app_with_meters(tmp_path / "a", 3)
    height, roots, chunks = _all_entries(app.store)
    target = Store(tmp_path / "b", genesis(), durable=False)
    base = (height, app.last_block_hash, app.last_block_time_ms, manifest_root(roots))
    target.restore(base, [e for chunk in chunks for e in chunk])
    out = _Outbox()
    service = ProofService(App(target), VAL, out)
    request = make_headers_request(CHAIN, 1, 5, VAL.public_key)
    service.handle(Message("proof_req", "m1", request))
    assert out.sent == []
    assert service.stats["headers_unavailable"] == 1
    service.handle(
        Message("proof_req", "m1", make_headers_request(CHAIN, height + 1, 6, VAL.public_key))
    )
    assert codec.decode(out.sent[-1][1]) == ["headers", []]
    report = verify_store(target)
    assert not report.ok
    assert f"restored from a snapshot at height {height}" in str(report.problems)
    target.close()


def test_a_joiner_ignores_answers_too_short_to_read() -> None:
    """A joiner waiting for a manifest drops 'snap_none' / 'snap_manifest' answers that are
    too short (anyone can write to its inbox) instead of failing the join on them, and still
    takes a well-formed refusal."""
    from ledger.snapshot_join import SnapshotJoiner

    joiner = SnapshotJoiner.__new__(SnapshotJoiner)
    joiner._chain = CHAIN  # the only state the answer parser reads
    for garbled in (["snap_none", CHAIN, 7], ["snap_manifest", CHAIN, 7, 3]):
        message = Message("sync_resp", "anyone", codec.encode(garbled))
        assert joiner._manifest_answer(message, nonce=7) is None
    refusal = Message("sync_resp", "v1", codec.encode(["snap_none", CHAIN, 7, "no_view"]))
    assert joiner._manifest_answer(refusal, nonce=7) == "no_view"
