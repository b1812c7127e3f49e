"""``Memo``: bounded in entries, the least recently used going first, safe to fill from several threads."""

from __future__ import annotations

import threading

from minirerank_integrations.store.memo import Memo


def test_the_least_recently_used_goes_first() -> None:
    memo: Memo[str, int] = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == 1  # "a" is now the most recent
    memo.put("c", 3)
    assert memo.get("b") is None and memo.get("a") == 1 and memo.get("c") == 3 and len(memo) == 2
    memo.pop("a")
    memo.pop("absent")
    assert memo.get("a") is None and len(memo) == 1
    memo.clear()
    assert len(memo) == 0 and memo.get("c") is None


def test_threads_filling_it_never_exceed_its_bound() -> None:
    memo: Memo[tuple[int, int], int] = Memo(50)

    def fill(thread: int) -> None:
        for i in range(2000):
            memo.put((thread, i), i)
            memo.get((thread, i // 2))

    threads = [threading.Thread(target=fill, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(memo) == 50
