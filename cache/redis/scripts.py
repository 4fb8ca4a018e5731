"""The Lua scripts of the entry index: each write is one script, so a reader sees an entry
whole (its hash, every index and the totals) or not at all.

Key names are built inside the scripts from the prefix (ARGV[1]), because what an entry's
old version was indexed under is only known there: so the index needs one Redis server
(or a primary with replicas, Sentinel), not Redis Cluster.
"""

from __future__ import annotations

# Remove `key`'s entry from every index and the totals, drop its references to its blobs;
# returns the digests it used (nil when there was no entry).
_UNINDEX = """
local function unindex(p, key)
    local entry = p .. 'e:' .. key
    local old = redis.call('HMGET', entry, 'engine', 'route', 'member', 'bytes', 'digests', 'pair')
    if not old[4] then
        return nil
    end
    redis.call('ZREM', p .. 'idx:all', key)
    redis.call('ZREM', p .. 'idx:engine:' .. old[1], key)
    redis.call('ZREM', p .. 'idx:route:' .. old[2], key)
    redis.call('ZREM', p .. 'idx:pair:' .. old[6], key)
    redis.call('ZREM', p .. 'idx:keys', key)
    redis.call('ZREM', p .. 'idx:prompt', old[3])
    redis.call('HINCRBY', p .. 'totals', 'entries', -1)
    redis.call('HINCRBY', p .. 'totals', 'bytes', -tonumber(old[4]))
    local digests = cjson.decode(old[5])
    for _, digest in ipairs(digests) do
        redis.call('SREM', p .. 'refs:' .. digest, key)
    end
    redis.call('DEL', entry)
    return digests
end

local function unreferenced(p, digests)
    local freed = {}
    for _, digest in ipairs(digests or {}) do
        if redis.call('SCARD', p .. 'refs:' .. digest) == 0 then
            table.insert(freed, digest)
        end
    end
    return freed
end
"""

# ARGV: prefix, key, version, created_at, expires_at, source, artifacts, summary, route,
# engine, bytes, prompt member, digests (JSON), pair; returns the old version's digests
# no entry refers to any more (the caller deletes those blobs).
PUT = (
    _UNINDEX
    + """
local p, key = ARGV[1], ARGV[2]
local old = unindex(p, key)
local entry = p .. 'e:' .. key
redis.call('HSET', entry,
    'version', ARGV[3], 'created_at', ARGV[4], 'expires_at', ARGV[5], 'source', ARGV[6],
    'artifacts', ARGV[7], 'summary', ARGV[8], 'route', ARGV[9], 'engine', ARGV[10],
    'bytes', ARGV[11], 'member', ARGV[12], 'digests', ARGV[13], 'pair', ARGV[14],
    'hits', 0, 'last_hit_at', '')
local created = tonumber(ARGV[4])
redis.call('ZADD', p .. 'idx:all', created, key)
redis.call('ZADD', p .. 'idx:engine:' .. ARGV[10], created, key)
redis.call('ZADD', p .. 'idx:route:' .. ARGV[9], created, key)
redis.call('ZADD', p .. 'idx:pair:' .. ARGV[14], created, key)
redis.call('ZADD', p .. 'idx:keys', 0, key)
redis.call('ZADD', p .. 'idx:prompt', created, ARGV[12])
redis.call('HINCRBY', p .. 'totals', 'entries', 1)
redis.call('HINCRBY', p .. 'totals', 'bytes', tonumber(ARGV[11]))
for _, digest in ipairs(cjson.decode(ARGV[13])) do
    redis.call('SADD', p .. 'refs:' .. digest, key)
end
redis.call('PUBLISH', p .. 'entries', key)
return unreferenced(p, old)
"""
)

# ARGV: prefix, key, version ('' for any); returns {deleted (0/1), freed digests...}.
DELETE = (
    _UNINDEX
    + """
local p, key = ARGV[1], ARGV[2]
if ARGV[3] ~= '' and redis.call('HGET', p .. 'e:' .. key, 'version') ~= ARGV[3] then
    return {0}
end
local old = unindex(p, key)
if not old then
    return {0}
end
redis.call('PUBLISH', p .. 'entries', key)
local answer = {1}
for _, digest in ipairs(unreferenced(p, old)) do
    table.insert(answer, digest)
end
return answer
"""
)

# ARGV: prefix, then (key, count, last hit time) triples, for entries that still exist.
ADD_HITS = """
local p = ARGV[1]
for i = 2, #ARGV, 3 do
    local entry = p .. 'e:' .. ARGV[i]
    if redis.call('EXISTS', entry) == 1 then
        redis.call('HINCRBY', entry, 'hits', ARGV[i + 1])
        local last = tonumber(redis.call('HGET', entry, 'last_hit_at')) or 0
        if tonumber(ARGV[i + 2]) > last then
            redis.call('HSET', entry, 'last_hit_at', ARGV[i + 2])
        end
    end
end
return 1
"""

# Prompt search over one chunk of `idx:prompt`, newest first. KEYS[1]: idx:prompt. ARGV:
# first rank, chunk size, needle (lower case), engine, route ('' for any), since, until
# ('' for none), matches to skip, matches to return. Returns {matches in the chunk, 1 if
# no older member can match, the keys of the returned matches...}. A plain substring find
# (C memcmp), restricted to the prompt part of each member.
SEARCH = """
local first, size = tonumber(ARGV[1]), tonumber(ARGV[2])
local rows = redis.call('ZREVRANGE', KEYS[1], first, first + size - 1, 'WITHSCORES')
local needle, engine, route = ARGV[3], ARGV[4], ARGV[5]
local since, before = tonumber(ARGV[6]), tonumber(ARGV[7])
local skip, take = tonumber(ARGV[8]), tonumber(ARGV[9])
local matched, done, page = 0, 0, {}
for i = 1, #rows, 2 do
    local member, score = rows[i], tonumber(rows[i + 1])
    if since and score < since then
        done = 1
        break
    end
    if not before or score < before then
        local a = string.find(member, '\0', 1, true)
        local at = string.find(member, needle, 1, true)
        if at and at + #needle <= a then
            local b = string.find(member, '\0', a + 1, true)
            local c = string.find(member, '\0', b + 1, true)
            if (engine == '' or string.sub(member, a + 1, b - 1) == engine)
                and (route == '' or string.sub(member, b + 1, c - 1) == route) then
                matched = matched + 1
                if matched > skip and #page < take then
                    page[#page + 1] = string.sub(member, c + 1)
                end
            end
        end
    end
end
if #rows < 2 * size then
    done = 1
end
local answer = {matched, done}
for _, key in ipairs(page) do
    answer[#answer + 1] = key
end
return answer
"""
