# Redis CPU per entry of the channels router removing the outbox entries it has just produced
# (functions/channels/src/deliveries.rs, produce_now), three ways, on a private redis-server:
#   script, oldest first  - a Lua script of LREM outbox -1 <entry> per entry (before 06720e1)
#   script, newest first  - the same script, the entries newest first (06720e1)
#   pipeline, newest first - plain LREM outbox -1 <entry> commands in one pipeline (since then)
# Each call first RPUSHes a batch of n entries behind `waiting` older ones, then removes the batch.
# Redis CPU = INFO cpu (used_cpu_user + used_cpu_sys) around the removal alone, minus what the
# INFO call itself costs (measured the same way with nothing in between); INFO commandstats
# would leave out a plain command's parsing and reply, which a script's figure includes.
# Ad hoc, not part of the test script; needs only redis-server:
#   python3 docs/bench/other-vm/router_remove_produced_redis_cpu.py
import json, re, socket, subprocess, time

PORT, CALLS = 6413, 100
SCRIPT = "local removed = 0 for i = {range} do removed = removed + redis.call('LREM', KEYS[1], -1, ARGV[i]) end return removed"


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def reply(self):
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            return None if rest == b"-1" else self.file.read(int(rest) + 2)[:-2]
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        return rest

    def call(self, *commands):
        self.sock.sendall(b"".join(encode(*c) for c in commands))
        return [self.reply() for _ in commands]

    def cpu(self):
        (info,) = self.call(("INFO", "cpu"))
        text = info.decode()
        return sum(float(re.search(rf"{f}:([\d.]+)", text).group(1)) for f in ("used_cpu_user", "used_cpu_sys"))


def entry(tag, i):
    # About the size of a real email-events outbox entry.
    return json.dumps({"topic": "email-events", "key": f"user-{i}", "value": "x" * 420, "id": f"{tag}-{i}"})


def remove(r, way, batch):
    if way == "pipeline, newest first":
        r.call(*[("LREM", "outbox", -1, e) for e in reversed(batch)])
        return
    loop = "1, #ARGV" if way == "script, oldest first" else "#ARGV, 1, -1"
    (removed,) = r.call(("EVAL", SCRIPT.format(range=loop), 1, "outbox", *batch))
    assert int(removed) == len(batch), removed


server = subprocess.Popen(["redis-server", "--port", str(PORT), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
time.sleep(0.5)
try:
    r = Redis(PORT)
    info_cost = 0.0
    for _ in range(200):
        c0 = r.cpu()
        info_cost += r.cpu() - c0
    info_cost /= 200
    for waiting in (0, 1000):
        for n in (50, 200):
            for way in ("script, oldest first", "script, newest first", "pipeline, newest first"):
                r.call(("DEL", "outbox"))
                for start in range(0, waiting, 100):
                    r.call(("RPUSH", "outbox", *[entry("waiting", i) for i in range(start, min(start + 100, waiting))]))
                spent = 0.0
                for c in range(CALLS):
                    batch = [entry(f"call{c}", i) for i in range(n)]
                    r.call(("RPUSH", "outbox", *batch))
                    c0 = r.cpu()
                    remove(r, way, batch)
                    spent += r.cpu() - c0 - info_cost
                (left,) = r.call(("LLEN", "outbox"))
                assert int(left) == waiting, left
                print(f"{waiting:5} waiting, batch {n:3}, {way:22}: {spent * 1e6 / (CALLS * n):5.2f} us of Redis CPU per entry")
finally:
    server.terminate()
