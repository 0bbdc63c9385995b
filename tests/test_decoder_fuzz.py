"""The frame decoder never trusts what it reads (issue 12, item 2).

Whatever bytes arrive, in whatever chunks, through either way of feeding it (``receive_data``,
or reading into ``get_buffer`` as the pipes do for large bodies), the decoder returns frames,
or "need more data", or raises ``ProtocolError``: never ``MemoryError``, ``OverflowError`` or
anything else. Its memory stays proportional to the bytes it was given, not to the lengths a
header announces. One flipped bit in a header is detected.

The decoder is reached through ``decoder_access`` (the one module that imports the internal
protocol). A decoder that trusted a length could still ask for gigabytes; so that such a
failure is a quick ``MemoryError`` instead of the machine swapping, every decode here runs
under an address-space limit (``RLIMIT_AS``) a little above what the process already maps.
"""

from __future__ import annotations

import contextlib
import resource
import tracemalloc
from collections.abc import Iterator

import pytest
from decoder_access import (
    NEED_DATA,
    FrameDecoder,
    Kind,
    ProtocolError,
    frame_bytes,
    raw_header,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# What a decoder may allocate beyond a small multiple of the bytes it was fed, however long
# the frame says it is: one reusable body buffer (the protocol keeps one of up to 64 MiB for
# frames whose buffers are copied when unpickled; a fuzzed header with a valid checksum and
# that flag reaches it) and a little more. A header that announces 2 GiB must not make it
# allocate more.
MEMORY_SLACK = 65 * 1024 * 1024
# How much more address space a decode may map than the process already does (RLIMIT_AS):
# far above MEMORY_SLACK, small enough that a decoder which trusts lengths fails quickly.
ADDRESS_SPACE_HEADROOM = 256 * 1024 * 1024
ABSURD_LENGTHS = [2**60, 2**63, 2**64 - 1]
# Bounded well under pytest-timeout's minute even while shrinking a failure: one bug is
# shrunk and reported (the first), not every distinct one.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextlib.contextmanager
def limited_address_space(headroom: int = ADDRESS_SPACE_HEADROOM) -> Iterator[None]:
    """Make an allocation of more than ``headroom`` bytes fail at once (MemoryError)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as status:
        mapped = next(int(ln.split()[1]) * 1024 for ln in status if ln.startswith("VmSize:"))
    limit = mapped + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module", autouse=True)
def _traced_memory() -> Iterator[None]:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    yield
    if started:
        tracemalloc.stop()


FrameTuple = tuple[int, int, bytes, list[bytes]]


class Decoded:
    """What a decoder made of one stream: the frames, the ProtocolError if any, the peak of
    memory allocated while decoding, and how many bytes it was fed."""

    def __init__(self) -> None:
        self.frames: list[FrameTuple] = []
        self.error: ProtocolError | None = None
        self.peak = 0
        self.fed = 0


def decode(stream: bytes, chunks: list[int], direct: bool = True) -> Decoded:
    """Feed ``stream`` in pieces of the sizes ``chunks`` (cycled), taking frames after each
    piece; ``direct``: read into the decoder's own buffer when it offers one, as the pipes do.
    Anything but a frame, NEED_DATA or ProtocolError propagates (and fails the test)."""
    out = Decoded()
    decoder = FrameDecoder()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    pos = 0
    turn = 0
    with limited_address_space():
        try:
            while True:
                while (frame := decoder.next_frame()) is not NEED_DATA:
                    # Copied at once: a frame may point into memory the decoder reuses.
                    out.frames.append(
                        (
                            int(frame.kind),
                            frame.task_id,
                            bytes(frame.body),
                            [bytes(b) for b in frame.buffers],
                        )
                    )
                    del frame
                if pos >= len(stream):
                    break
                piece = stream[pos : pos + chunks[turn % len(chunks)]]
                turn += 1
                target = decoder.get_buffer() if direct else None
                if target is not None:
                    n = min(len(target), len(piece))
                    target[:n] = piece[:n]
                    target.release()
                    decoder.buffer_updated(n)
                else:
                    n = len(piece)
                    decoder.receive_data(piece)
                pos += n
                out.fed += n
        except ProtocolError as exc:
            out.error = exc
    out.peak = tracemalloc.get_traced_memory()[1] - base
    return out


def assert_memory_bounded(decoded: Decoded) -> None:
    bound = MEMORY_SLACK + 4 * decoded.fed
    assert decoded.peak <= bound, (
        f"decoding {decoded.fed} bytes allocated {decoded.peak} bytes (bound {bound})"
    )


# -- strategies --------------------------------------------------------------------------------

KINDS = [int(k) for k in Kind]
task_ids = st.integers(0, 2**64 - 1)
lengths = st.one_of(
    st.integers(0, 64),
    st.integers(0, 1 << 20),
    st.sampled_from([2**31 - 1, 2**31, 2**32, *ABSURD_LENGTHS]),
    st.integers(0, 2**64 - 1),
)


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(list(Kind)))
    body = draw(st.binary(max_size=300))
    buffers = draw(st.lists(st.binary(max_size=100), max_size=3))
    return frame_bytes(kind, draw(task_ids), body, buffers)


@st.composite
def arbitrary_headers(draw: st.DrawFn) -> bytes:
    """A header with any kind byte and any lengths, followed by a few bytes of body."""
    kind = draw(st.one_of(st.sampled_from(KINDS), st.integers(0, 255)))
    flags = draw(st.one_of(st.sampled_from([0, 1]), st.integers(0, 255)))
    buflens = draw(st.lists(lengths, max_size=3))
    body = draw(st.binary(max_size=64))
    return raw_header(kind, draw(task_ids), draw(lengths), buflens, flags) + body


@st.composite
def truncated_frames(draw: st.DrawFn) -> bytes:
    frame = draw(valid_frames())
    return frame[: draw(st.integers(0, len(frame) - 1))]


@st.composite
def bit_flipped_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(valid_frames()))
    bit = draw(st.integers(0, 8 * len(frame) - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    return bytes(frame)


segments = st.one_of(
    valid_frames(),
    arbitrary_headers(),
    truncated_frames(),
    bit_flipped_frames(),
    st.binary(max_size=256),
)
streams = st.lists(segments, min_size=1, max_size=6).map(b"".join)
chunkings = st.lists(st.integers(1, 400), min_size=1, max_size=8)


# -- the harness itself works ---------------------------------------------------------------------


@FUZZ
@given(frames=st.lists(valid_frames(), max_size=6), chunks=chunkings, direct=st.booleans())
def test_valid_frames_come_back_whole_in_any_chunking(
    frames: list[bytes], chunks: list[int], direct: bool
) -> None:
    decoded = decode(b"".join(frames), chunks, direct)
    assert decoded.error is None
    assert [frame_bytes(Kind(k), i, b, bufs) for k, i, b, bufs in decoded.frames] == frames


@pytest.mark.parametrize("direct", [True, False], ids=["into-its-buffer", "receive-data"])
def test_a_large_frame_comes_back_whole_in_pipe_sized_chunks(direct: bool) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: read straight into its final buffer
    stream = frame_bytes(Kind.RESULT, 5, body, [b"tail" * 1000]) + frame_bytes(Kind.READY)
    decoded = decode(stream, [65536], direct)
    assert decoded.error is None
    assert decoded.frames == [
        (int(Kind.RESULT), 5, body, [b"tail" * 1000]),
        (int(Kind.READY), 0, b"", []),
    ]
    assert_memory_bounded(decoded)


def test_raw_header_matches_the_encoder() -> None:
    """If this fails, the wire format changed: update ``decoder_access.raw_header``."""
    assert raw_header(Kind.RESULT, 7, 0) == frame_bytes(Kind.RESULT, 7)
    assert raw_header(Kind.ERROR, 8, 3) + b"abc" == frame_bytes(Kind.ERROR, 8, b"abc")


# -- the fuzz -----------------------------------------------------------------------------------


@FUZZ
@given(stream=streams, chunks=chunkings, direct=st.booleans())
def test_any_bytes_give_only_frames_need_data_or_protocol_error_in_bounded_memory(
    stream: bytes, chunks: list[int], direct: bool
) -> None:
    decoded = decode(stream, chunks, direct)  # anything but ProtocolError propagates
    assert_memory_bounded(decoded)


@FUZZ
@given(frame=truncated_frames(), chunks=chunkings, direct=st.booleans())
def test_a_truncated_frame_only_needs_more_data(
    frame: bytes, chunks: list[int], direct: bool
) -> None:
    decoded = decode(frame, chunks, direct)
    assert decoded.error is None
    assert decoded.frames == []
    assert_memory_bounded(decoded)


# -- lengths it must not trust ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["main", "buffer"])
def test_a_header_announcing_2_GiB_does_not_allocate_2_GiB(where: str) -> None:
    if where == "main":
        header = raw_header(Kind.RESULT, 1, 2**31)
    else:
        header = raw_header(Kind.RESULT, 1, 10, [2**31])
    decoded = decode(header + b"\0" * 1000, [65536])
    # Either verdict is fine (a 2 GiB result can be legitimate); the allocation is not.
    assert_memory_bounded(decoded)


ABSURD_HEADERS = {
    "main-2**60": (2**60, ()),
    "main-2**63": (2**63, ()),
    "main-2**64-1": (2**64 - 1, ()),
    "buffer-2**60": (10, (2**60,)),
    "buffer-2**63": (10, (2**63,)),
    "buffer-2**64-1": (10, (2**64 - 1,)),
    "buffers-summing-past-2**64": (10, (2**63, 2**63, 2**63)),
}


@pytest.mark.parametrize("name", list(ABSURD_HEADERS))
def test_absurd_lengths_are_protocol_errors(name: str) -> None:
    main_len, buflens = ABSURD_HEADERS[name]
    header = raw_header(Kind.RESULT, 1, main_len, buflens)
    decoded = decode(header + b"\0" * 64, [65536])
    assert isinstance(decoded.error, ProtocolError), (
        f"no ProtocolError for {name}; frames: {decoded.frames}"
    )
    assert_memory_bounded(decoded)


def test_unknown_kind_is_a_protocol_error() -> None:
    decoded = decode(raw_header(0x7F, 1, 0) + frame_bytes(Kind.READY), [65536])
    assert isinstance(decoded.error, ProtocolError)
    assert decoded.frames == []


# -- flipped bits ---------------------------------------------------------------------------------

BODY = b"a body of forty bytes, give or take ...."
FOLLOWING = frame_bytes(Kind.READY) + frame_bytes(Kind.RESULT, 9, b"x" * 100)


def test_a_bit_flip_in_the_length_gives_nothing_but_protocol_error_or_need_data() -> None:
    """The issue's reproduction: a flipped length bit raised MemoryError or OverflowError."""
    for bit in range(64):
        header = raw_header(Kind.RESULT, 3, len(BODY) ^ (1 << bit))
        decoded = decode(header + BODY + FOLLOWING, [65536])
        assert_memory_bounded(decoded)


@pytest.mark.parametrize("buffers", [[], [b"first buffer", b"second"]], ids=["plain", "buffers"])
def test_every_one_bit_flip_in_a_header_is_detected(buffers: list[bytes]) -> None:
    """A flipped header bit must raise ProtocolError, never yield a frame nobody sent (another
    kind, another task id) or wait for a body that never comes (a larger length)."""
    frame = frame_bytes(Kind.RESULT, 3, BODY, buffers)
    header_len = len(frame) - len(BODY) - sum(map(len, buffers))
    undetected = []
    for bit in range(8 * header_len):
        flipped = bytearray(frame)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            decoded = decode(bytes(flipped) + FOLLOWING, [65536])
        except (MemoryError, OverflowError) as exc:
            undetected.append(f"{bit}:{type(exc).__name__}")
            continue
        if decoded.error is None or decoded.frames:
            undetected.append(str(bit))
    assert not undetected, (
        f"{len(undetected)} of {8 * header_len} single-bit flips of the {header_len}-byte header "
        f"went undetected with {len(FOLLOWING)} bytes following it (no ProtocolError, no "
        f"frame: the decoder waits for more), bit numbers: {', '.join(undetected)}"
    )
