"""The one newest-frame slot (edge/pipeline/slots.py): used by the pipeline's stage hand-offs,
the live-source grabber, the window/RTSP worker and the HTTP output."""
import threading
import time

import numpy as np

from tir.edge.frame import Frame, now
from tir.edge.pipeline.slots import LatestWinsSlot


def frame(seq):
    return Frame(raw=np.full((2, 2), seq, np.uint16), seq=seq, t_capture=now())


def test_slot_latest_wins_and_counts_drops():
    dropped = []
    slot = LatestWinsSlot("x", on_drop=dropped.append)
    slot.put(1)
    slot.put(2)
    slot.put(3)
    assert slot.get(0) == 3
    assert slot.dropped == 2 and dropped == [1, 2]
    assert slot.get(0.01) is None


def test_slot_put_when_empty_waits_for_consumer():
    slot = LatestWinsSlot("x")
    slot.put("a")
    done = threading.Event()

    def producer():
        slot.put_when_empty("b")
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not done.wait(0.1)  # blocked: "a" not taken yet
    assert slot.get(1) == "a"
    assert done.wait(2)
    assert slot.get(1) == "b" and slot.dropped == 0
    t.join()


def test_slot_close_wakes_waiters():
    slot = LatestWinsSlot("x")
    got = []
    t = threading.Thread(target=lambda: got.append(slot.get(10)))
    t.start()
    slot.close()
    t.join(2)
    assert not t.is_alive() and got == [None]
    assert slot.put_when_empty(1) is False


def test_slot_keeps_only_the_newest_and_counts_overwrites():
    slot = LatestWinsSlot()
    assert slot.get(timeout=0.01) is None
    for i in range(3):
        slot.put(frame(i))
    assert slot.get(timeout=0.01).seq == 2
    assert slot.dropped == 2
    assert slot.get(timeout=0.01) is None, "a frame is handed out once"
    slot.put(frame(3))
    assert slot.get(timeout=0.01).seq == 3 and slot.dropped == 2


def test_slot_wakes_a_waiting_consumer():
    slot = LatestWinsSlot()
    got = []
    consumer = threading.Thread(target=lambda: got.append(slot.get(timeout=5.0)))
    consumer.start()
    time.sleep(0.05)
    slot.put(frame(7))
    consumer.join(5.0)
    assert got and got[0].seq == 7


def test_peek_reads_the_newest_without_taking_it():
    slot = LatestWinsSlot("x")
    assert slot.peek() == (None, 0)
    slot.put("a")
    slot.put("b")
    assert slot.peek() == ("b", 2) and slot.pending, "peek must not take the item"
    assert slot.get(0) == "b" and not slot.pending
    assert slot.peek() == ("b", 2), "the newest item stays readable after it was taken"


def test_get_waits_the_whole_timeout_when_a_consumer_takes_nothing():
    slot = LatestWinsSlot("x")
    slot.put("a")
    assert slot.take_nowait() == "a" and slot.take_nowait() is None
    got = []
    t = threading.Thread(target=lambda: got.append(slot.get(5.0)))
    t.start()
    time.sleep(0.05)
    slot.put("b")
    t.join(5.0)
    assert got == ["b"] and slot.dropped == 0


def test_close_leaves_the_last_item_to_take():
    slot = LatestWinsSlot("x")
    slot.put(frame(4))
    slot.close()
    assert slot.get(5.0).seq == 4 and slot.get(5.0) is None
    slot.put(frame(5))  # a live producer after close is not refused: the item can still be taken
    assert slot.get(0).seq == 5
