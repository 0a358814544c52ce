# Redis CPU of the channels router's REMOVE_PRODUCED script (functions/channels/src/deliveries.rs) per
# entry removed, oldest first (before 06720e1) against newest first (06720e1), on a private redis-server:
# a batch of n entries is RPUSHed to an outbox that already holds `waiting` entries (as after a broker
# outage), then removed by one script call given the entries in the order they were pushed. Redis CPU
# is INFO commandstats (EVAL usec and the LREMs inside it). Ad hoc, not part of the test script; needs
# only redis-server and redis-cli: python3 docs/bench/other-vm/router_remove_produced_redis_cpu.py
import json, subprocess, time

PORT = 6413
LOOP = {
    "oldest first": "for i = 1, #ARGV do removed = removed + redis.call('LREM', KEYS[1], -1, ARGV[i]) end",
    "newest first": "for i = #ARGV, 1, -1 do removed = removed + redis.call('LREM', KEYS[1], -1, ARGV[i]) end",
}
CALLS = 20


def cli(*args):
    return subprocess.run(["redis-cli", "-p", str(PORT), *map(str, args)], capture_output=True, text=True, check=True).stdout


def stats():
    out = {}
    for line in cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line.split(":", 1)
            out[name[8:]] = dict(kv.split("=") for kv in fields.split(","))
    return out


def entry(tag, i):
    # About the size of a real email-events outbox entry.
    return json.dumps({"topic": "email-events", "key": f"user-{i}", "value": "x" * 420, "id": f"{tag}-{i}"})


server = subprocess.Popen(["redis-server", "--port", str(PORT), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
time.sleep(0.5)
try:
    for waiting in (0, 1000):
        for n in (50, 200):
            for name, loop in LOOP.items():
                script = f"local removed = 0 {loop} return removed"
                cli("DEL", "outbox")
                for start in range(0, waiting, 100):
                    cli("RPUSH", "outbox", *[entry("waiting", i) for i in range(start, min(start + 100, waiting))])
                cli("CONFIG", "RESETSTAT")
                for c in range(CALLS):
                    batch = [entry(f"call{c}", i) for i in range(n)]
                    cli("RPUSH", "outbox", *batch)
                    removed = cli("EVAL", script, 1, "outbox", *batch).strip()
                    assert removed == str(n), removed
                s = stats()
                per = CALLS * n
                print(f"{waiting:5} waiting, batch {n:3}, {name}: {float(s['eval']['usec']) / per:5.2f} us of Redis per entry "
                      f"(LREM {float(s['lrem']['usec']) / per:5.2f})")
finally:
    server.terminate()
