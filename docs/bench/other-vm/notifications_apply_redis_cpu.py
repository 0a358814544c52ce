# Redis CPU per recipient of the notifications APPLY script at two commits, on a private redis-server
# (INFO commandstats usec_per_call of EVALSHA / recipients per call). Ad hoc, not part of the test
# script: extract the scripts first (Lua = script.rs PRECONDITIONS + store.rs APPLY body at each
# commit, into /tmp/apply-old.lua and /tmp/apply-new.lua), then run with a Python that has
# redis==5.2.1 (python3 -m venv v && v/bin/pip install redis==5.2.1). Output of 2026-11-29 03:38 UTC,
# 40e48bb (old) vs 36b7a16 (new): notifications_apply_redis_cpu.txt
import redis, subprocess, time, sys, json, uuid
port = 6411
srv = subprocess.Popen(['redis-server', '--port', str(port), '--save', '', '--appendonly', 'no'], stdout=subprocess.DEVNULL)
time.sleep(0.5)
r = redis.Redis(port=port)
R, CALLS = 100, 300
view = json.dumps({"id": "x", "type": "CONNECTION_REQUEST", "actor": {"id": "a", "name": "Ada"}, "text": "Ada wants to connect", "createdAt": "2026-11-29T00:00:00.000Z"})
def run(name, src, online):
    sha = r.script_load(src)
    r.flushall(); r.config_resetstat()
    now = int(time.time() * 1000)
    for u in range(R):
        if online: r.hset(f'presence:{{u{u}}}', mapping={'online': '1', 'lastSeen': now})
    for c in range(CALLS):
        keys, argv = [], [now, 90000, 100, 7 * 24 * 3600 * 1000, 10000]
        for u in range(R):
            keys += [f'n:{{u{u}}}', f'ns:{{u{u}}}', f'nd:{{u{u}}}', f'presence:{{u{u}}}', f'nr:{{u{u}}}']
        for u in range(R):
            argv += [f'ch:{u}', 1, str(uuid.uuid4()), '1' if online else '0', view, '2026-11-29T00:00:00.000Z']
        r.evalsha(sha, len(keys), *keys, *argv)
    st = r.info('commandstats')['cmdstat_evalsha']
    print(f"{name:4} {'online (unneeded)' if online else 'offline (created)':18}: {st['usec_per_call'] / R:.2f} us of Redis per recipient ({st['calls']} calls of {R} recipients)")
for online in (False, True):
    for rep in range(2):
        for name in ('old', 'new'):
            run(name, open(f'/tmp/apply-{name}.lua').read(), online)
srv.terminate()
