"""Bounded output capture: memory stays bounded, head and tail are kept, drops counted."""

from sandbox_orch.capture import BoundedBuffer


def test_small_output_is_kept_whole():
    buffer = BoundedBuffer(100)
    for chunk in (b"hello ", b"world"):
        buffer.write(chunk)
    assert buffer.getvalue() == b"hello world" and buffer.complete and buffer.dropped == 0


def test_flood_keeps_head_and_tail_and_counts_the_rest():
    buffer = BoundedBuffer(1000)
    data = bytes(range(256)) * 4000  # 1,024,000 bytes in uneven chunks
    for start in range(0, len(data), 777):
        buffer.write(data[start : start + 777])
    value = buffer.getvalue()
    assert value.startswith(data[:500]) and value.endswith(data[-500:])
    assert buffer.total == len(data) and buffer.dropped == len(data) - 1000
    assert f"{len(data) - 1000} bytes of output dropped".encode() in value


def test_memory_is_exactly_the_limit_whatever_the_chunk_size():
    buffer = BoundedBuffer(1000)
    for size in (1, 10_000, 3, 999, 1001, 5000):
        buffer.write(b"x" * size)
        assert len(buffer._head) + len(buffer._ring) <= 1000


def test_tail_does_not_depend_on_wrapping():
    buffer = BoundedBuffer(20)  # head 10, ring 10
    buffer.write(b"0123456789")  # fills the head
    for chunk in (b"abc", b"defgh", b"ijklmno"):  # wraps the ring
        buffer.write(chunk)
    assert buffer.getvalue().endswith(b"fghijklmno") and buffer.dropped == 5
    assert buffer.tail(4) == "lmno"


def test_tail_is_text_of_the_last_characters():  # multi-byte characters stay whole
    buffer = BoundedBuffer(1 << 20)
    buffer.write("é".encode() * 5000)
    assert buffer.tail(10) == "é" * 10
