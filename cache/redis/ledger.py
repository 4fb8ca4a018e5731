"""The credits ledger in Redis: a sorted set by time, and per-day totals kept on append.

    <prefix>ledger        sorted set, score = time, member = "<seq, 16 digits>|<record JSON>"
                          (the sequence number keeps records of the same instant apart and
                          in the order they were appended: newest first reads them back)
    <prefix>ledger:seq    that sequence
    <prefix>ledger:days   hash "<day>|spent|saved|calls|hits|unknown" -> total, added to by
                          the same script that appends, so the unfiltered per-day totals are
                          one read, never a scan

A query filtered by route, caller or kind reads the records of its time range and filters
them here, in chunks, as do the per-day totals of a time-bounded query: a day or a week is
a bounded read, while such a query over the whole of a long ledger reads all of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cache.interfaces import LedgerPage, LedgerQuery, LedgerRecord
from cache.local.ledger import day_of, summarise_days
from cache.redis.connection import RedisConnection

SCAN_CHUNK = 5000
STATS = ("spent", "saved", "calls", "hits", "unknown")

APPEND = """
local i = 1
while i <= #ARGV do
    local time, day, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local credits, body = ARGV[i + 3], ARGV[i + 4]
    local seq = redis.call('INCR', KEYS[2])
    redis.call('ZADD', KEYS[1], time, string.format('%016d', seq) .. '|' .. body)
    if kind == 'call' then
        redis.call('HINCRBY', KEYS[3], day .. '|calls', 1)
        if credits == '' then
            redis.call('HINCRBY', KEYS[3], day .. '|unknown', 1)
        else
            redis.call('HINCRBYFLOAT', KEYS[3], day .. '|spent', credits)
        end
    else
        redis.call('HINCRBY', KEYS[3], day .. '|hits', 1)
        if credits ~= '' then
            redis.call('HINCRBYFLOAT', KEYS[3], day .. '|saved', credits)
        end
    end
    i = i + 5
end
return 1
"""


def _decode(member: Any) -> LedgerRecord:
    text = member.decode() if isinstance(member, bytes) else member
    _, _, body = text.partition("|")
    return LedgerRecord(**json.loads(body))


class RedisLedger:
    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self.client = connection.client
        self.records_key = connection.key("ledger")
        self.seq_key = connection.key("ledger", "seq")
        self.days_key = connection.key("ledger", "days")
        self._append = self.client.register_script(APPEND)

    async def append(self, records: Sequence[LedgerRecord]) -> None:
        args: list[str] = []
        for r in records:
            credits = "" if r.credits is None else repr(float(r.credits))
            body = json.dumps(r.as_dict(), separators=(",", ":"))
            args += [repr(float(r.time)), day_of(r.time), r.kind, credits, body]
        await self._append(keys=[self.records_key, self.seq_key, self.days_key], args=args)

    async def query(self, query: LedgerQuery) -> LedgerPage:
        low = "-inf" if query.since is None else repr(float(query.since))
        high = "+inf" if query.until is None else f"({float(query.until)!r}"
        filtered = query.route is not None or query.caller is not None or query.kind is not None
        if not filtered:
            total = int(await self.client.zcount(self.records_key, low, high))
            members = await self.client.zrevrangebyscore(
                self.records_key, high, low, start=query.offset, num=query.limit
            )
            page = [_decode(m) for m in members]
            if query.since is None and query.until is None:
                return LedgerPage(total, page, await self._days())
            return LedgerPage(total, page, _ordered(summarise_days(await self._scan(low, high))))
        matching = [
            r
            for r in await self._scan(low, high)
            if (query.route is None or r.route == query.route)
            and (query.caller is None or r.caller == query.caller)
            and (query.kind is None or r.kind == query.kind)
        ]
        page = matching[query.offset : query.offset + query.limit]
        return LedgerPage(len(matching), page, _ordered(summarise_days(matching)))

    async def _scan(self, low: str, high: str) -> list[LedgerRecord]:
        """Every record in the range, newest first, read in chunks."""
        records: list[LedgerRecord] = []
        offset = 0
        while True:
            members = await self.client.zrevrangebyscore(
                self.records_key, high, low, start=offset, num=SCAN_CHUNK
            )
            records += [_decode(m) for m in members]
            if len(members) < SCAN_CHUNK:
                return records
            offset += SCAN_CHUNK

    async def _days(self) -> dict[str, dict[str, float]]:
        raw = await self.client.hgetall(self.days_key)
        days: dict[str, dict[str, float]] = {}
        for field, value in raw.items():
            name = field.decode() if isinstance(field, bytes) else str(field)
            day, _, stat = name.partition("|")
            totals = days.setdefault(day, dict.fromkeys(STATS, 0.0))
            number = float(value)
            totals[stat] = int(number) if stat in ("calls", "hits", "unknown") else number
        return _ordered(days)


def _ordered(days: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Newest day first, as the local ledger answers."""
    return {day: days[day] for day in sorted(days, reverse=True)}
