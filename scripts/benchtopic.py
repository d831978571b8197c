"""benchtopic — topic polling for the benchmarks (scripts/bench-lib), over scripts/kafkawire.py.

  python3 benchtopic.py leaders BOOTSTRAP TOPIC PARTITIONS TIMEOUT_S
      wait until TOPIC has PARTITIONS partitions, each with a leader (exit 1 with
      the partition -> leader map on timeout)
  python3 benchtopic.py end BOOTSTRAP TOPIC
      print the sum of the partitions' high watermarks (end offsets)
  python3 benchtopic.py wait-end BOOTSTRAP TOPIC N TIMEOUT_S
      poll every 20 ms until that sum is >= N, then print time.time_ns();
      on timeout print the sum and exit 1

Only the first broker of BOOTSTRAP is asked for Metadata (v1); ListOffsets (v1)
goes to each partition's leader. Both versions are still served by Kafka 3.9 and 4.x.
"""
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
import kafkawire  # noqa: E402  (scripts/kafkawire.py, beside this file)

CLIENT_ID = "shipper-bench"
TIMEOUT_S = 10


def connect(host, port):
    return kafkawire.Connection(host, port, TIMEOUT_S, CLIENT_ID)


def topic_metadata(conn, topic):
    """({node_id: (host, port)}, {partition: leader}) for one topic."""
    brokers, leaders = kafkawire.metadata(conn, [topic])
    return {node: (host, port) for node, host, port in brokers}, leaders.get(topic, {})


def wait_leaders(boot, topic, want, timeout):
    deadline = time.time() + timeout
    while True:
        _, leaders = topic_metadata(boot, topic)
        if len(leaders) == want and all(leader >= 0 for leader in leaders.values()):
            return 0
        if time.time() > deadline:
            sys.exit("topic %s: partitions/leaders not ready: %r" % (topic, leaders))
        time.sleep(0.05)


class EndOffsets:
    """Sum of a topic's end offsets, one connection per partition leader (found once)."""

    def __init__(self, boot, topic):
        brokers, leaders = topic_metadata(boot, topic)
        self.topic, self.by_leader = topic, {}
        for partition, leader in leaders.items():
            self.by_leader.setdefault(leader, []).append(partition)
        self.conns = {leader: connect(*brokers[leader]) for leader in self.by_leader}

    def sum(self):
        return sum(sum(kafkawire.list_offsets(self.conns[leader], self.topic, parts).values())
                   for leader, parts in self.by_leader.items())


def main(argv):
    cmd, bootstrap, topic = argv[0], argv[1], argv[2]
    boot = connect(*kafkawire.split_address(bootstrap.split(",")[0]))
    if cmd == "leaders":
        return wait_leaders(boot, topic, int(argv[3]), float(argv[4]))
    ends = EndOffsets(boot, topic)
    if cmd == "end":
        print(ends.sum())
    elif cmd == "wait-end":
        want, deadline = int(argv[3]), time.time() + float(argv[4])
        while True:
            total = ends.sum()
            if total >= want:
                print(time.time_ns())
                return 0
            if time.time() > deadline:
                print(total)
                return 1
            time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
