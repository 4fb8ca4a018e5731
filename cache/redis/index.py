"""The entry index in Redis: one hash per entry, sorted sets to page through, totals kept
by the same scripts that write (cache.redis.scripts).

    <prefix>e:<key>                      hash: version, times, source, artifacts, summary,
                                         hits, and what the entry is indexed under
    <prefix>idx:all                      sorted set, key by created_at (newest first)
    <prefix>idx:engine:<engine>          the same per engine,
    <prefix>idx:route:<route>            per route,
    <prefix>idx:pair:<n>:<engine>:<route>  and per engine and route together
    <prefix>idx:keys                     every key at score 0 (prefix lookups, ZRANGEBYLEX)
    <prefix>idx:prompt                   "<prompt, lower case>\\0<engine>\\0<route>\\0<key>"
                                         by created_at, for prompt search
    <prefix>totals                       hash: entries, bytes
    <prefix>refs:<sha256>                set of the keys whose entries use that blob
    <prefix>entries                      pub/sub: the key of every entry written or deleted

Pages without a prompt filter are one ZREVRANGEBYSCORE on the sorted set their filters
name, counted by ZCOUNT: O(log n + page) whatever the size. Prompt search is a substring
search, any case, done in Redis by a script over `idx:prompt` newest first, 1,000 members
a call (so no call holds Redis long), which returns how many matched and the keys of the
asked-for page only. It reads every prompt in the time range, so it is linear in the
entries (measured at 100,000 entries: bench/README.md, "entries"), and, being a scan
rather than a snapshot, may count an entry written meanwhile twice or not at all. A
trigram index (what SQLite's FTS5 gives the local backend) would make it sublinear, at
about a hundred set members per entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from cache.interfaces import EntryQuery
from cache.model import ArtifactInfo, EntryMeta
from cache.redis import scripts
from cache.redis.coalesced import CoalescedReads
from cache.redis.connection import RedisConnection

# Members read per search call: each call holds Redis about 2 ms at most (measured).
SCAN_COUNT = 1000


def _clean(text: str) -> str:
    """No NUL: it separates the fields of a prompt member."""
    return text.replace("\x00", " ")


def pair_name(engine: str, route: str) -> str:
    return f"{len(engine)}:{engine}:{route}"


def prompt_member(prompt: str, engine: str, route: str, key: str) -> str:
    return "\x00".join((_clean(prompt.lower()), _clean(engine), _clean(route), key))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional_float(value: Any) -> float | None:
    text = _text(value) if value is not None else ""
    return float(text) if text else None


def meta_from_hash(key: str, row: Mapping[Any, Any]) -> EntryMeta | None:
    if not row or b"version" not in row:
        return None
    return EntryMeta(
        key=key,
        version=_text(row[b"version"]),
        created_at=float(row[b"created_at"]),
        expires_at=_optional_float(row.get(b"expires_at")),
        source="offline" if row.get(b"source") == b"offline" else "upstream",
        artifacts=tuple(ArtifactInfo.from_dict(a) for a in json.loads(row[b"artifacts"])),
        summary=json.loads(row[b"summary"]),
        hits=int(row.get(b"hits", b"0")),
        last_hit_at=_optional_float(row.get(b"last_hit_at")),
    )


class RedisIndex:
    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection
        self.client = connection.client
        self.prefix = connection.prefix
        self.channel = connection.key("entries")
        self._put = self.client.register_script(scripts.PUT)
        self._delete = self.client.register_script(scripts.DELETE)
        self._add_hits = self.client.register_script(scripts.ADD_HITS)
        self._search_chunk = self.client.register_script(scripts.SEARCH)
        self._versions: CoalescedReads[str | None] = CoalescedReads(self._read_versions)

    def entry_key(self, key: str) -> str:
        return self.connection.key("e", key)

    async def version(self, key: str) -> str | None:
        """Asked on every hit in version mode: reads that overlap go as one pipeline
        (cache.redis.coalesced), each sent after its caller asked."""
        return await self._versions.read(key)

    async def _read_versions(self, keys: Sequence[str]) -> list[str | None]:
        if len(keys) == 1:
            values = [await self.client.hget(self.entry_key(keys[0]), "version")]
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(self.entry_key(key), "version")
                values = await pipe.execute()
        return [None if value is None else _text(value) for value in values]

    async def meta(self, key: str) -> EntryMeta | None:
        return meta_from_hash(key, await self.client.hgetall(self.entry_key(key)))

    async def metas(self, keys: Sequence[str]) -> list[EntryMeta]:
        """The entries of `keys` that still exist, in that order."""
        if not keys:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self.entry_key(key))
            rows = await pipe.execute()
        metas = [meta_from_hash(key, row) for key, row in zip(keys, rows, strict=True)]
        return [m for m in metas if m is not None]

    async def put(self, meta: EntryMeta, prompt: str) -> list[str]:
        """Write the entry (replacing any other version); the digests freed by that."""
        digests = sorted({a.sha256 for a in meta.artifacts})
        freed = await self._put(
            args=[
                self.prefix,
                meta.key,
                meta.version,
                repr(meta.created_at),
                "" if meta.expires_at is None else repr(meta.expires_at),
                meta.source,
                json.dumps([a.as_dict() for a in meta.artifacts]),
                json.dumps(meta.summary, ensure_ascii=False, default=str),
                meta.route,
                meta.engine,
                str(meta.bytes),
                prompt_member(prompt, meta.engine, meta.route, meta.key),
                json.dumps(digests),
                pair_name(meta.engine, meta.route),
            ]
        )
        return [_text(d) for d in freed]

    async def delete(self, key: str, version: str | None = None) -> tuple[bool, list[str]]:
        """Delete `key` (only at `version`, when given): (deleted, digests freed)."""
        answer = await self._delete(args=[self.prefix, key, version or ""])
        return bool(int(answer[0])), [_text(d) for d in answer[1:]]

    async def referenced(self, sha256: str) -> bool:
        return bool(await self.client.exists(self.connection.key("refs", sha256)))

    async def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        args: list[str] = [self.prefix]
        for key, (count, last) in hits.items():
            args += [key, str(int(count)), repr(float(last))]
        await self._add_hits(args=args)

    async def totals(self) -> tuple[int, int]:
        entries, nbytes = await self.client.hmget(self.connection.key("totals"), "entries", "bytes")
        return int(entries or 0), int(nbytes or 0)

    async def resolve(self, prefix: str, limit: int) -> list[str]:
        raw = prefix.encode()
        keys = await self.client.zrangebylex(
            self.connection.key("idx", "keys"), b"[" + raw, b"(" + raw + b"\xff", 0, limit
        )
        return [_text(k) for k in keys]

    async def oldest(self, limit: int) -> list[str]:
        keys = await self.client.zrange(self.connection.key("idx", "all"), 0, limit - 1)
        return [_text(k) for k in keys]

    async def page(self, query: EntryQuery) -> tuple[int, list[EntryMeta]]:
        low = "-inf" if query.since is None else repr(float(query.since))
        high = "+inf" if query.until is None else f"({float(query.until)!r}"
        if query.prompt:
            return await self._search(query)
        if query.engine and query.route:
            name = self.connection.key("idx", "pair", pair_name(query.engine, query.route))
        elif query.engine:
            name = self.connection.key("idx", "engine", query.engine)
        elif query.route:
            name = self.connection.key("idx", "route", query.route)
        else:
            name = self.connection.key("idx", "all")
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcount(name, low, high)
            pipe.zrevrangebyscore(name, high, low, start=query.offset, num=query.limit)
            total, keys = await pipe.execute()
        return int(total), await self.metas([_text(k) for k in keys])

    async def _search(self, query: EntryQuery) -> tuple[int, list[EntryMeta]]:
        """Prompt substring search, newest first: Redis reads the prompts a chunk at a
        time (a script per chunk, so no call holds Redis long) and sends back how many
        matched and the keys of this page's matches only."""
        assert query.prompt
        needle = _clean(query.prompt.lower())
        name = self.connection.key("idx", "prompt")
        total, first = 0, 0
        keys: list[str] = []
        while True:
            answer = await self._search_chunk(
                keys=[name],
                args=[
                    first,
                    SCAN_COUNT,
                    needle,
                    _clean(query.engine or ""),
                    _clean(query.route or ""),
                    "" if query.since is None else repr(float(query.since)),
                    "" if query.until is None else repr(float(query.until)),
                    max(0, query.offset - total),
                    query.limit - len(keys),
                ],
            )
            total += int(answer[0])
            keys += [_text(k) for k in answer[2:]]
            if int(answer[1]):
                return total, await self.metas(keys)
            first += SCAN_COUNT
