"""The sans-IO wire protocol: frames survive any chunking, large bodies, out-of-band buffers.

No processes here: bytes produced by ``encode_frame`` are fed back into a ``FrameDecoder``
in every way a pipe could deliver them, and ``OutBuffer`` is drained by partial writes.
"""

from __future__ import annotations

import pickle
import random

import pytest

from aioexec._local.protocol import (
    DIRECT_READ_THRESHOLD,
    NEED_DATA,
    Frame,
    FrameDecoder,
    Kind,
    OutBuffer,
    ProtocolError,
    encode_frame,
)
from aioexec._worker.codec import OUT_OF_BAND_MIN, dumps, out_of_band, out_of_band_kwargs

# (kind, task id, body, out-of-band buffers) for a varied stream of frames
SAMPLE_FRAMES: list[tuple[Kind, int, bytes, list[bytes]]] = [
    (Kind.READY, 0, b"", []),
    (Kind.RUN_ASYNC, 1, b"main pickle bytes", []),
    (Kind.RUN_SYNC, 2**64 - 1, b"x" * 1000, [b"first buffer", b"", b"third" * 50]),
    (Kind.CANCEL, 7, b"", []),
    (Kind.RESULT, 8, b"", [b"only a buffer"]),
    (Kind.ERROR, 9, bytes(range(256)) * 4, []),
    (Kind.STOP, 0, b"", []),
]


def _stream(frames: list[tuple[Kind, int, bytes, list[bytes]]]) -> bytes:
    return b"".join(bytes(p) for f in frames for p in encode_frame(*f))


def _as_tuple(frame: Frame) -> tuple[Kind, int, bytes, list[bytes]]:
    return frame.kind, frame.task_id, bytes(frame.body), [bytes(b) for b in frame.buffers]


def _drain(decoder: FrameDecoder) -> list[tuple[Kind, int, bytes, list[bytes]]]:
    out = []
    while isinstance(frame := decoder.next_frame(), Frame):
        out.append(_as_tuple(frame))
    return out


def test_frames_decode_when_fed_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    decoded = []
    for i in range(len(data := _stream(SAMPLE_FRAMES))):
        decoder.receive_data(data[i : i + 1])
        decoded += _drain(decoder)
    assert decoded == SAMPLE_FRAMES
    assert decoder.next_frame() is NEED_DATA


@pytest.mark.parametrize("seed", range(5))
def test_frames_decode_under_random_chunking(seed: int) -> None:
    rng = random.Random(seed)
    frames = SAMPLE_FRAMES * 20
    data = _stream(frames)
    decoder = FrameDecoder()
    decoded = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 300)
        decoder.receive_data(memoryview(data)[pos : pos + n])
        pos += n
        decoded += _drain(decoder)
    assert decoded == frames


def test_frames_decode_when_the_whole_stream_arrives_at_once() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(bytearray(_stream(SAMPLE_FRAMES * 3)))
    assert _drain(decoder) == SAMPLE_FRAMES * 3


def test_decoder_returns_need_data_until_a_frame_is_complete() -> None:
    data = _stream([(Kind.RESULT, 5, b"body", [])])
    decoder = FrameDecoder()
    assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(data[:-1])
    assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(data[-1:])
    assert _drain(decoder) == [(Kind.RESULT, 5, b"body", [])]


def test_large_body_is_read_directly_into_its_buffer_by_partial_reads() -> None:
    body = random.Random(1).randbytes(DIRECT_READ_THRESHOLD + 12345)
    buffer = random.Random(2).randbytes(DIRECT_READ_THRESHOLD)
    data = _stream([(Kind.RESULT, 3, body, [buffer]), (Kind.CANCELLED, 4, b"", [])])
    decoder = FrameDecoder()
    decoder.receive_data(data[:1000])  # header and the start of the body
    assert decoder.next_frame() is NEED_DATA
    pos = 1000
    direct_reads = 0
    frame = decoder.next_frame()
    while not isinstance(frame, Frame):
        # As the real readers do: read into the buffer, then ask for frames.
        target = decoder.get_buffer()
        assert target is not None
        n = min(len(target), 70_000)  # a partial read, as os.readv would do
        target[:n] = data[pos : pos + n]
        decoder.buffer_updated(n)
        pos += n
        direct_reads += 1
        frame = decoder.next_frame()
    assert direct_reads > 1
    assert _as_tuple(frame) == (Kind.RESULT, 3, body, [buffer])
    # What follows the large frame goes through receive_data again.
    assert decoder.get_buffer() is None
    decoder.receive_data(data[pos:])
    assert _drain(decoder) == [(Kind.CANCELLED, 4, b"", [])]


def test_large_body_fed_by_receive_data_keeps_the_following_frame() -> None:
    body = random.Random(3).randbytes(2 * DIRECT_READ_THRESHOLD)
    frames = [(Kind.RESULT, 1, body, []), (Kind.ERROR, 2, b"next", []), (Kind.STOP, 0, b"", [])]
    data = _stream(frames)
    decoder = FrameDecoder()
    decoded = []
    for start in range(0, len(data), 100_003):  # chunks that straddle the frame boundaries
        decoder.receive_data(data[start : start + 100_003])
        decoded += _drain(decoder)
    assert decoded == frames


def test_out_of_band_buffers_round_trip_through_pickle() -> None:
    payload = {
        "big": pickle.PickleBuffer(bytearray(random.Random(4).randbytes(DIRECT_READ_THRESHOLD))),
        "small": pickle.PickleBuffer(b"tiny"),
        "inline": "text",
    }
    buffers: list[pickle.PickleBuffer] = []
    body = pickle.dumps(payload, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 2
    data = _stream([(Kind.RESULT, 11, body, [b.raw() for b in buffers])])
    decoder = FrameDecoder()
    for start in range(0, len(data), 65536):
        decoder.receive_data(data[start : start + 65536])
        if (target := decoder.get_buffer()) is not None:
            break
    pos = min(start + 65536, len(data))
    frame = decoder.next_frame()
    while not isinstance(frame, Frame):
        target = decoder.get_buffer()
        assert target is not None
        n = len(target)
        target[:n] = data[pos : pos + n]
        decoder.buffer_updated(n)
        pos += n
        frame = decoder.next_frame()
    assert len(frame.buffers) == 2
    loaded = pickle.loads(frame.body, buffers=frame.buffers)
    assert bytes(loaded["big"]) == bytes(payload["big"].raw())
    assert bytes(loaded["small"]) == b"tiny"
    assert loaded["inline"] == "text"


def test_encode_frame_does_not_copy_payloads() -> None:
    body = bytearray(b"body")
    buffer = bytearray(b"buffer")
    pieces = encode_frame(Kind.RESULT, 1, body, [buffer])
    assert pieces[1] is body
    assert pieces[2] is buffer


def test_a_damaged_header_is_a_protocol_error() -> None:
    data = bytearray(_stream([(Kind.RESULT, 1, b"x", [])]))
    data[4] = 200  # the kind byte, behind the checksum
    decoder = FrameDecoder()
    decoder.receive_data(data)
    with pytest.raises(ProtocolError, match="checksum"):
        decoder.next_frame()


def test_unknown_frame_kind_is_a_protocol_error() -> None:
    data = b"".join(bytes(p) for p in encode_frame(200, 1, b"x"))  # a kind nobody sends
    decoder = FrameDecoder()
    decoder.receive_data(data)
    with pytest.raises(ProtocolError, match="200"):
        decoder.next_frame()


def test_out_buffer_partial_consume_writes_every_byte_once_in_order() -> None:
    frames = SAMPLE_FRAMES * 3
    out = OutBuffer()
    for f in frames:
        out.append(encode_frame(*f))
    expected = _stream(frames)
    assert out.nbytes == len(expected)
    written = bytearray()
    rng = random.Random(5)
    while out:
        pending = out.pending()
        joined = b"".join(bytes(p) for p in pending)
        n = min(len(joined), rng.randint(1, 97))  # a short write
        written += joined[:n]
        out.consume(n)
        assert out.nbytes == len(expected) - len(written)
    assert bytes(written) == expected
    assert out.nbytes == 0
    assert out.pending() == []


def test_out_buffer_hands_out_at_most_max_pieces() -> None:
    out = OutBuffer(max_pieces=4)
    out.append([b"a", b"bb", b"ccc"])
    out.append([b"dddd", b"eeeee", b"ffffff"])
    assert [bytes(p) for p in out.pending()] == [b"a", b"bb", b"ccc", b"dddd"]
    out.consume(4)  # "a", "bb" and one byte of "ccc"
    assert [bytes(p) for p in out.pending()] == [b"cc", b"dddd", b"eeeee", b"ffffff"]
    out.consume(out.nbytes)
    assert not out


def _decode_in_pipe_sized_reads(data: bytes, decoder: FrameDecoder, size: int = 65536) -> Frame:
    """Feed ``data`` as a pipe would: small reads through receive_data, large bodies
    straight into the decoder's buffer; return the one frame it holds."""
    pos = 0
    while True:
        frame = decoder.next_frame()
        if isinstance(frame, Frame):
            return frame
        target = decoder.get_buffer()
        if target is not None:
            n = min(len(target), size)
            target[:n] = data[pos : pos + n]
            decoder.buffer_updated(n)
        else:
            n = min(size, len(data) - pos)
            decoder.receive_data(data[pos : pos + n])
        pos += n


def test_large_bytes_are_pickled_out_of_band_and_come_back_as_bytes() -> None:
    big = random.Random(5).randbytes(OUT_OF_BAND_MIN)
    args, wrapped = out_of_band((big, b"small", 3))
    kwargs, wrapped_kwargs = out_of_band_kwargs({"k": big, "s": "text"})
    assert (wrapped, wrapped_kwargs) == (1, 1)
    payload = dumps((args, kwargs), wrapped + wrapped_kwargs)
    assert len(payload.body) < 1000  # the bytes are not in the main pickle
    assert [b.nbytes for b in payload.buffers] == [OUT_OF_BAND_MIN, OUT_OF_BAND_MIN]
    assert payload.copied
    loaded_args, loaded_kwargs = pickle.loads(payload.body, buffers=payload.buffers)
    assert loaded_args == (big, b"small", 3)
    assert loaded_kwargs == {"k": big, "s": "text"}
    assert type(loaded_args[0]) is bytes
    assert type(loaded_kwargs["k"]) is bytes


def test_small_or_nested_values_are_left_as_they_are() -> None:
    values = (b"x" * (OUT_OF_BAND_MIN - 1), [b"y" * OUT_OF_BAND_MIN], bytearray(OUT_OF_BAND_MIN))
    assert out_of_band(values) == (values, 0)
    kwargs = {"a": 1}
    assert out_of_band_kwargs(kwargs) == (kwargs, 0)


def test_a_foreign_out_of_band_buffer_clears_the_copied_flag() -> None:
    big = bytes(OUT_OF_BAND_MIN)
    args, wrapped = out_of_band((big, pickle.PickleBuffer(bytearray(10))))
    assert not dumps(args, wrapped).copied
    assert not dumps(pickle.PickleBuffer(b"x")).copied
    assert dumps("no buffers at all").copied  # nothing out of band: nothing to keep


def test_copied_frames_reuse_the_decoders_memory_and_others_get_their_own() -> None:
    size = DIRECT_READ_THRESHOLD * 2
    decoder = FrameDecoder()
    seen = []
    for seed, copied in [(1, True), (2, True), (3, False), (4, True)]:
        data = random.Random(seed).randbytes(size)
        stream = b"".join(bytes(p) for p in encode_frame(Kind.RESULT, seed, b"m", [data], copied))
        frame = _decode_in_pipe_sized_reads(stream, decoder)
        assert (frame.kind, frame.task_id, bytes(frame.body)) == (Kind.RESULT, seed, b"m")
        assert bytes(frame.buffers[0]) == data
        seen.append((frame.buffers[0].obj, data, copied))
    copied_owners = {id(owner) for owner, _, copied in seen if copied}
    assert len(copied_owners) == 1  # one reused buffer for every copied frame
    owner, data, _ = seen[2]
    assert id(owner) not in copied_owners
    assert bytes(owner)[-len(data) :] == data  # untouched by the copied frame after it


def test_large_out_of_band_bytes_are_read_into_the_very_object_unpickling_returns() -> None:
    from aioexec._cpython import writable_bytes

    big = random.Random(7).randbytes(5 * OUT_OF_BAND_MIN + 5)  # read directly (>256 KiB)
    payload = dumps(out_of_band((big, b"small"))[0], 1)
    data = b"".join(bytes(p) for p in encode_frame(Kind.RESULT, 3, *payload))
    made: list[bytes] = []

    def new_bytes(n: int) -> tuple[bytes, memoryview] | None:
        result = writable_bytes(n)
        if result is not None:
            made.append(result[0])
        return result

    frame = _decode_in_pipe_sized_reads(data, FrameDecoder(new_bytes=new_bytes), 4096)
    loaded = pickle.loads(frame.body, buffers=frame.buffers)
    assert loaded == (big, b"small")
    assert made, "the trick is on in CPython"
    assert loaded[0] is made[0]  # no copy: the object the pipe's bytes were read into


def test_without_the_trick_large_out_of_band_bytes_are_read_into_one_buffer() -> None:
    big = random.Random(8).randbytes(5 * OUT_OF_BAND_MIN)
    payload = dumps(out_of_band((big,))[0], 1)
    data = b"".join(bytes(p) for p in encode_frame(Kind.RESULT, 4, *payload))
    frame = _decode_in_pipe_sized_reads(data, FrameDecoder(new_bytes=lambda n: None), 4096)
    assert pickle.loads(frame.body, buffers=frame.buffers) == (big,)
